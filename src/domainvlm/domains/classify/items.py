"""One labelled image as the classify sources read it (a folder's file, or a CSV / JSONL row), and split names."""

from __future__ import annotations

from dataclasses import dataclass

from ...data.splits import ALIASES, STANDARD, alias

# One name per split whatever the folder or column says (data.splits' one table, which data build writes by),
# so `--split val` / `val_split: val` find valid/, Validation/, dev/ or Training/ data too and data build
# writes val.jsonl, not Validation.jsonl.
SPLITS = (*STANDARD, *ALIASES)


def split_name(split: str | None) -> str | None:
    if split is None or not str(split).strip():
        return None
    return alias(split)


@dataclass
class Item:
    image: str                  # absolute path
    labels: tuple[str, ...]     # as written in the source (checked against the taxonomy later)
    split: str | None
    where: str                  # file:row or folder, for error messages
