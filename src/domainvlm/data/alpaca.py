"""LLaMA-Factory's alpaca format: ``{"instruction", "input"?, "output", "system"?, "history"?, "images"?}``.

The user turn is the instruction, then the input on its own line when there is one; ``history`` holds earlier
``[question, answer]`` pairs, which come first; ``system`` becomes a system turn. JSON array or JSONL, as
LLaMA-Factory reads it (its dataset_info.json column names are the defaults here).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .formats import _images, _loc, _objects, _record


def looks_like_alpaca(item) -> bool:
    return isinstance(item, dict) and "instruction" in item and "output" in item


def _text(path, i, item, key, required=True) -> str:
    v = item.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v.strip()):
        raise UserError(f"{_loc(path, i, key)}: must be a non-empty string")
    return v


def read_alpaca(path: str | Path, image_root: str | Path | None = None) -> list:
    path = Path(path)
    base = path.resolve().parent
    out = []
    for i, item in _objects(path):
        if not looks_like_alpaca(item):
            raise UserError(f"{_loc(path, i, 'instruction' if 'instruction' not in item else 'output')}: missing")
        messages = []
        if isinstance(item.get("system"), str) and item["system"].strip():
            messages.append({"role": "system", "content": item["system"]})
        history = item.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, list) and len(h) == 2 and
                                                    all(isinstance(t, str) for t in h) for h in history):
            raise UserError(f"{_loc(path, i, 'history')}: must be a list of [question, answer] pairs")
        for q, a in history:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        extra = _text(path, i, item, "input", required=False)
        user = _text(path, i, item, "instruction") + (f"\n{extra}" if extra.strip() else "")
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": _text(path, i, item, "output")}]
        out.append(_record(path, i, item, _images(path, i, item, "images", base, image_root), messages))
    return out
