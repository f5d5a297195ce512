"""Torch dataset over records: images are resolved and the conversation encoded lazily, per item."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.images import load_image
from ..data.record import Record, read_jsonl
from ..errors import UserError
from ..models.chat_format import encode_train


class RecordDataset(Dataset):
    """``augment="dihedral"``: each wafer record's images get one random rotation/mirror (labels unchanged)."""

    def __init__(self, records: list[Record], processor, max_length: int, base_dir: str | Path | None = None,
                 augment: str = "none"):
        self.records, self.processor, self.max_length, self.base_dir = records, processor, max_length, base_dir
        if augment not in ("none", "dihedral", "domain"):
            raise UserError(f"augment: unknown augmentation {augment!r} (use none, dihedral or domain)")
        self.augment = augment

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        images = [load_image(ref, self.base_dir) for ref in r.images]
        if self.augment == "dihedral" and r.labels.get("task") == "wafer":
            from ..data.wafer_canvas import dihedral

            k = int(torch.randint(0, 8, ()))  # torch RNG: seeded per DataLoader worker
            images = [dihedral(im, k) for im in images]
        elif self.augment == "domain":  # [classify hook] the records' domain's own augmentation
            images = _domain_augment(r, images)
        return encode_train(self.processor, r.messages, images, self.max_length)


def _domain_augment(r: Record, images: list) -> list:
    import random

    from ..domains import all_domains

    d = next((d for d in all_domains() if d.name == r.labels.get("task")), None)
    if d is None or d.augment is None:
        return images
    rng = random.Random(int(torch.randint(0, 2**31, ())))  # torch RNG: seeded per DataLoader worker
    return [d.augment(r, im, rng) for im in images]


def load_records(path: str | Path) -> list[Record]:
    return list(read_jsonl(path))
