"""Torch dataset over records: images are resolved and the conversation encoded lazily, per item."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import domains
from ..data.images import load_image
from ..data.record import Record, read_jsonl
from ..errors import UserError
from ..models.chat_format import CutsImage, encode_train


def augmentations() -> dict[str, list]:
    """Augmentation name -> the domains that implement it (``Domain.augment`` + ``extra["augmentations"]``)."""
    out: dict[str, list] = {}
    for d in domains.all_domains():
        for name in d.extra.get("augmentations", ()) if d.augment else ():
            out.setdefault(name, []).append(d.name)
    return out


class RecordDataset(Dataset):
    """``augment``: a domain's training augmentation (e.g. the wafer domain's "dihedral": each wafer record's
    images get one random rotation/mirror, labels unchanged), applied to that domain's records only.

    Its random draws come from (seed, epoch, index), not a running RNG, so a resumed run sees the same
    transforms as an uninterrupted one whatever the loader prefetched or skipped; ``set_epoch`` reaches loader
    workers too (the epoch is a shared-memory tensor), persistent ones included."""

    def __init__(self, records: list[Record], processor, max_length: int, base_dir: str | Path | None = None,
                 augment: str = "none", seed: int = 0):
        self.records, self.processor, self.max_length, self.base_dir = records, processor, max_length, base_dir
        self.tasks = set() if augment == "none" else set(augmentations().get(augment, ()))
        if augment != "none" and not self.tasks:
            raise UserError(f"augment: unknown augmentation {augment!r} "
                            f"(use {' or '.join(['none', *sorted(augmentations())])})")
        self.augment = augment
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def item_seed(self, i: int) -> int:
        """The torch seed item ``i``'s augmentation draws from this epoch."""
        return int(np.random.SeedSequence([self.seed, int(self._epoch), i]).generate_state(1)[0])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        images = [load_image(ref, self.base_dir) for ref in r.images]
        if r.labels.get("task") in self.tasks:
            with torch.random.fork_rng(devices=[]):  # the domain draws from torch's RNG: seed it per item
                torch.manual_seed(self.item_seed(i))
                images = domains.get(r.labels["task"]).augment(r, images, self.augment)
        try:
            return encode_train(self.processor, r.messages, images, self.max_length)
        except CutsImage as e:  # a user setting, not a bug: one line naming the record and the length it needs
            raise TooShort(r.id, e) from None


class TooShort(UserError):
    """max_length cuts through a record's image tokens: ``needed`` tokens hold them, ``length`` the whole record."""

    def __init__(self, record_id: str, e, of: str = ""):
        self.record_id, self.length, self.needed, self.max_length = record_id, e.length, e.needed, e.max_length
        super().__init__(f"max_length={e.max_length} cuts through the image tokens of record {record_id!r}{of}: "
                         f"they need max_length >= {e.needed} ({e.length} keeps its whole answer; or give each "
                         "image fewer tokens, e.g. max_pixels)")


def load_records(path: str | Path) -> list[Record]:
    return list(read_jsonl(path))


def split_records(records: list[Record], cfg) -> tuple[list[Record], list[Record]]:
    """(train, val): cfg.val_data, else a seeded ``val_fraction`` of ``records`` held out."""
    if cfg.val_data:
        return records, load_records(cfg.val_data)
    rng = random.Random(cfg.seed)
    idx = list(range(len(records)))
    rng.shuffle(idx)
    # val_fraction=0 holds out nothing; any other share at least one record, and never all of them
    n_val = min(max(1, int(len(records) * cfg.val_fraction)), len(records) - 1) if len(records) > 1 else 0
    val = set(idx[:n_val if cfg.val_fraction > 0 else 0])
    return [r for i, r in enumerate(records) if i not in val], [records[i] for i in sorted(val)]
