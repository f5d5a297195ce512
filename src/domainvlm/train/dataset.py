"""Torch dataset over records: images are resolved and the conversation encoded lazily, per item."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..data.images import load_image
from ..data.record import Record, read_jsonl
from ..models.chat_format import encode_train


class RecordDataset(Dataset):
    def __init__(self, records: list[Record], processor, max_length: int, base_dir: str | Path | None = None):
        self.records, self.processor, self.max_length, self.base_dir = records, processor, max_length, base_dir

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        images = [load_image(ref, self.base_dir) for ref in r.images]
        return encode_train(self.processor, r.messages, images, self.max_length)


def load_records(path: str | Path) -> list[Record]:
    return list(read_jsonl(path))
