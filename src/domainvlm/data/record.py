"""The one record type every data source produces and every trainer/evaluator consumes.

A record is an image list plus a multi-turn conversation plus task labels. On disk it is one JSON object per
line (JSONL). Images are *references* (strings) resolved by :func:`domainvlm.data.images.load_image`:
a file path (png/jpg/dcm), or ``<file.npz>#<index>`` for a raw wafer map inside an npz file.
User turns mark where an image goes with the literal ``<image>`` token (LLaVA / LLaMA-Factory convention).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import UserError, json_problem, where

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    id: str
    images: list[str]
    messages: list[dict]  # [{"role": "user"|"assistant"|"system", "content": str}, ...]
    labels: dict = field(default_factory=dict)  # task labels, e.g. {"task": "wafer", "defects": [...]}
    meta: dict = field(default_factory=dict)  # provenance: source, split, lang, ...

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, src: str = "<dict>", line: int | None = None) -> "Record":
        if not isinstance(d, dict):
            raise UserError(f"{where(src, line)}: expected a JSON object, got {type(d).__name__}")
        for key, typ in (("id", (str, int)), ("images", list), ("messages", list)):
            if key not in d:
                raise UserError(f"{where(src, line, key)}: missing")
            if not isinstance(d[key], typ):
                raise UserError(f"{where(src, line, key)}: wrong type {type(d[key]).__name__}")
        rec = cls(id=str(d["id"]), images=list(d["images"]), messages=list(d["messages"]),
                  labels=dict(d.get("labels") or {}), meta=dict(d.get("meta") or {}))
        rec.check(src, line)
        return rec

    def check(self, src: str = "<record>", line: int | None = None) -> None:
        """Structural validation with file/line/field in every message."""
        if not self.messages:
            raise UserError(f"{where(src, line, 'messages')}: empty conversation")
        for i, m in enumerate(self.messages):
            f = f"messages[{i}]"
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise UserError(f"{where(src, line, f)}: needs 'role' and 'content'")
            if m["role"] not in ROLES:
                raise UserError(f"{where(src, line, f + '.role')}: unknown role {m['role']!r}")
            if not isinstance(m["content"], str):
                raise UserError(f"{where(src, line, f + '.content')}: must be a string")
        if self.messages[-1]["role"] != "assistant":
            raise UserError(f"{where(src, line, 'messages')}: last turn must be the assistant's answer")
        n_tok = sum(m["content"].count(IMAGE_TOKEN) for m in self.messages)
        if n_tok != len(self.images):
            raise UserError(f"{where(src, line, 'images')}: {len(self.images)} image(s) but "
                            f"{n_tok} '{IMAGE_TOKEN}' placeholder(s) in the messages")
        for j, ref in enumerate(self.images):
            if not isinstance(ref, str) or not ref:
                raise UserError(f"{where(src, line, f'images[{j}]')}: must be a non-empty string")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) for each non-blank line; malformed lines raise UserError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    from ..io import iter_lines

    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: malformed JSON ({json_problem(e)})") from None


def read_jsonl(path: str | Path) -> Iterator[Record]:
    for n, d in iter_jsonl(path):
        yield Record.from_dict(d, str(path), n)


def write_records(path: str | Path, records: Iterable[Record]) -> int:
    from ..io import write_jsonl

    return write_jsonl(path, (r.to_dict() for r in records))
