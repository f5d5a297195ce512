"""Torch dataset over records: images are resolved and the conversation encoded lazily, per item."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .. import domains
from ..data.images import load_image
from ..data.record import Record, read_jsonl
from ..errors import UserError
from ..models.chat_format import encode_train


def augmentations() -> dict[str, list]:
    """Augmentation name -> the domains that implement it (``Domain.augment`` + ``extra["augmentations"]``)."""
    out: dict[str, list] = {}
    for d in domains.all_domains():
        for name in d.extra.get("augmentations", ()) if d.augment else ():
            out.setdefault(name, []).append(d.name)
    return out


class RecordDataset(Dataset):
    """``augment``: a domain's training augmentation (e.g. the wafer domain's "dihedral": each wafer record's
    images get one random rotation/mirror, labels unchanged), applied to that domain's records only."""

    def __init__(self, records: list[Record], processor, max_length: int, base_dir: str | Path | None = None,
                 augment: str = "none"):
        self.records, self.processor, self.max_length, self.base_dir = records, processor, max_length, base_dir
        self.tasks = set() if augment == "none" else set(augmentations().get(augment, ()))
        if augment != "none" and not self.tasks:
            raise UserError(f"augment: unknown augmentation {augment!r} "
                            f"(use {' or '.join(['none', *sorted(augmentations())])})")
        self.augment = augment

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        images = [load_image(ref, self.base_dir) for ref in r.images]
        if r.labels.get("task") in self.tasks:
            images = domains.get(r.labels["task"]).augment(r, images, self.augment)
        return encode_train(self.processor, r.messages, images, self.max_length)


def load_records(path: str | Path) -> list[Record]:
    return list(read_jsonl(path))
