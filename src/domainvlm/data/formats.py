"""LLaMA-Factory *sharegpt* and *LLaVA* JSON <-> :class:`Record`.

Image paths: on read, every relative reference is resolved to an **absolute** path (see :func:`resolve_image_ref`)
so records stay valid wherever they are written next. On write, images inside the output file's folder (or
``image_root``) are stored relative to it, which is what LLaMA-Factory (``dataset_dir``) and LLaVA
(``--image_folder``) expect; anything else stays absolute. Missing images are not an error while reading
(datasets are often converted before images are copied): call :func:`check_images` to validate.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError, json_problem
from ..io import read_text, write_json
from .record import IMAGE_TOKEN, Record

# sharegpt role tags (LLaMA-Factory defaults) -> Record roles, and back.
_FROM_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_TO_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


def _loc(path, index=None, field=None) -> str:
    s = str(path)
    if index is not None:
        s += f": record {index}"
    if field is not None:
        s += f": field '{field}'"
    return s


def load_items(path: str | Path) -> list:
    """A JSON array, or JSONL (one object per line) as LLaMA-Factory also accepts."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise UserError(f"{path}: malformed JSON ({json_problem(e, line=True)})") from None
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as e2:
                    raise UserError(f"{path}:{n}: malformed JSON ({json_problem(e2)})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data


def _split_ref(ref: str) -> tuple[str, str]:
    """'maps.npz#12' -> ('maps.npz', '#12'), 'LOT#42.xml#3' -> ('LOT#42.xml', '#3'): the index after the LAST
    '#' (data/images.resolve's rule; fab map files have one too); plain paths have no suffix."""
    head, sep, tail = ref.rpartition("#")
    if sep and head and tail.strip().isdigit():
        return head, sep + tail
    return ref, ""


def resolve_image_ref(ref: str, base_dir: str | Path, image_root: str | Path | None = None) -> str:
    """Absolute path for ``ref``. Tries, in order: absolute as is; ``image_root/ref``; ``base_dir/ref``;
    ``image_root/<basename>`` (datasets often store 'images/x.png' or a path from the author's machine while
    the files sit flat in one folder). If none exists, returns the first candidate so the error names it."""
    if "://" in ref:
        return ref
    p, suffix = _split_ref(ref)
    pp = Path(p).expanduser()
    if pp.is_absolute():
        if pp.exists() or image_root is None:
            return str(pp) + suffix
        cands = [pp]
    else:
        cands = ([Path(image_root) / pp] if image_root is not None else []) + [Path(base_dir) / pp]
    if image_root is not None:
        cands.append(Path(image_root) / pp.name)
    for c in cands:
        if c.exists():
            return str(c.resolve()) + suffix
    return str(cands[0].absolute()) + suffix


def _relative_ref(ref: str, root: Path) -> str:
    if "://" in ref:
        return ref
    p, suffix = _split_ref(ref)
    pp = Path(p)
    if not pp.is_absolute():
        return ref
    try:
        return pp.resolve().relative_to(root.resolve()).as_posix() + suffix
    except ValueError:
        return ref


def check_images(records: list[Record], src: str | Path = "<records>") -> None:
    """Raise UserError naming the first missing image files (and how many are missing)."""
    missing = []
    for r in records:
        for j, ref in enumerate(r.images):
            p, _ = _split_ref(ref)
            if "://" not in p and not Path(p).exists():
                missing.append(f"record {r.id!r} images[{j}]: {p}")
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise UserError(f"{src}: {len(missing)} image file(s) not found: " + "; ".join(missing[:3]) + more)


def _record(path, i, item, images, messages) -> Record:
    rid = item.get("id", f"{Path(path).stem}-{i}")
    if not isinstance(rid, (str, int)):
        raise UserError(f"{_loc(path, i, 'id')}: must be a string or integer")
    labels, meta = item.get("labels") or {}, item.get("meta") or {}
    if not isinstance(labels, dict) or not isinstance(meta, dict):
        raise UserError(f"{_loc(path, i, 'labels' if not isinstance(labels, dict) else 'meta')}: must be an object")
    rec = Record(id=str(rid), images=images, messages=messages, labels=dict(labels), meta=dict(meta))
    rec.check(_loc(path, i))
    return rec


def _images(path, i, item, key, base, image_root) -> list[str]:
    val = item.get(key)
    if val is None:
        return []
    if isinstance(val, str):
        val = [val]
    if not isinstance(val, list) or not all(isinstance(v, str) and v for v in val):
        raise UserError(f"{_loc(path, i, key)}: must be a path or a list of non-empty paths")
    return [resolve_image_ref(v, base, image_root) for v in val]


def _conversations(path, i, turns, field) -> list[dict]:
    """sharegpt/LLaVA 'conversations' ({from, value}) or OpenAI-style 'messages' ({role, content})."""
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{_loc(path, i, field)}: must be a non-empty list")
    rk, ck = ("from", "value") if field == "conversations" else ("role", "content")
    out = []
    for j, t in enumerate(turns):
        f = f"{field}[{j}]"
        if not isinstance(t, dict) or rk not in t or ck not in t:
            raise UserError(f"{_loc(path, i, f)}: needs '{rk}' and '{ck}'")
        role = _FROM_ROLE.get(t[rk])
        if role is None:
            raise UserError(f"{_loc(path, i, f + '.' + rk)}: unsupported role {t[rk]!r} "
                            f"(supported: {', '.join(sorted(_FROM_ROLE))})")
        content = t[ck]
        if isinstance(content, list):  # multimodal content parts: [{"type": "image"}, {"type": "text", ...}]
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif isinstance(part, dict) and part.get("type") in ("image", "image_url"):
                    parts.append(IMAGE_TOKEN)
                else:
                    raise UserError(f"{_loc(path, i, f + '.' + ck)}: unsupported content part {part!r:.60}")
            content = "".join(parts)
        if not isinstance(content, str):
            raise UserError(f"{_loc(path, i, f + '.' + ck)}: must be a string")
        out.append({"role": role, "content": content})
    return out


def _objects(path: Path):
    """(index, item) of a JSON array / JSONL file whose every item must be an object."""
    for i, item in enumerate(load_items(path)):
        if not isinstance(item, dict):
            raise UserError(f"{_loc(path, i)}: expected a JSON object, got {type(item).__name__}")
        yield i, item


def read_sharegpt(path: str | Path, image_root: str | Path | None = None) -> list[Record]:
    """LLaMA-Factory sharegpt: ``{"conversations": [{"from", "value"}], "images": [...], "system"?}`` or the
    ``{"messages": [{"role", "content"}], "images": [...]}`` variant. JSON array or JSONL."""
    path = Path(path)
    base = path.resolve().parent
    out = []
    for i, item in _objects(path):
        field = "conversations" if "conversations" in item else "messages" if "messages" in item else None
        if field is None:
            raise UserError(f"{_loc(path, i, 'conversations')}: missing (neither 'conversations' nor 'messages')")
        if item.get("videos") or item.get("audios"):
            raise UserError(f"{_loc(path, i, 'videos' if item.get('videos') else 'audios')}: not supported")
        messages = _conversations(path, i, item[field], field)
        if isinstance(item.get("system"), str) and item["system"] and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": item["system"]})
        images = _images(path, i, item, "images", base, image_root)
        out.append(_record(path, i, item, images, messages))
    return out


def read_llava(path: str | Path, image_root: str | Path | None = None) -> list[Record]:
    """LLaVA: ``{"id", "image": "x.png" | [...], "conversations": [{"from": "human", "value": "<image>\\n..."}]}``.
    ``image_root`` is LLaVA's ``--image_folder``; without it, paths are relative to the JSON file's folder."""
    path = Path(path)
    base = path.resolve().parent
    out = []
    for i, item in _objects(path):
        if "conversations" not in item:
            raise UserError(f"{_loc(path, i, 'conversations')}: missing")
        messages = _conversations(path, i, item["conversations"], "conversations")
        images = _images(path, i, item, "image", base, image_root)
        out.append(_record(path, i, item, images, messages))
    return out


def _root_for(path: Path, image_root) -> Path:
    return Path(image_root) if image_root is not None else Path(path).resolve().parent


def write_sharegpt(records, path: str | Path, image_root: str | Path | None = None,
                   style: str = "conversations", keep_extra: bool = False) -> int:
    """Write a sharegpt JSON array atomically. ``style="messages"`` writes the role/content variant.
    ``keep_extra`` also stores id/labels/meta (LLaMA-Factory ignores unmapped columns, but nested dicts
    that differ between rows can trip its Arrow schema inference, so it is off by default)."""
    if style not in ("conversations", "messages"):
        raise ValueError(f"style must be 'conversations' or 'messages', not {style!r}")
    root = _root_for(path, image_root)
    rows = []
    for r in records:
        if style == "conversations":
            turns = [{"from": _TO_FROM[m["role"]], "value": m["content"]} for m in r.messages]
        else:
            turns = [{"role": m["role"], "content": m["content"]} for m in r.messages]
        row = {style: turns, "images": [_relative_ref(x, root) for x in r.images]}
        if keep_extra:
            row.update(id=r.id, labels=r.labels, meta=r.meta)
        rows.append(row)
    write_json(path, rows)
    return len(rows)


def write_llava(records, path: str | Path, image_root: str | Path | None = None) -> int:
    """Write LLaVA JSON atomically: one image as a string, several as a list, none: no 'image' key.
    LLaVA has no system turn, so records with one are refused rather than silently changed."""
    root = _root_for(path, image_root)
    rows = []
    for r in records:
        if any(m["role"] == "system" for m in r.messages):
            raise UserError(f"record {r.id!r}: field 'messages': LLaVA format has no system turn; "
                            "export as sharegpt instead")
        row = {"id": r.id}
        imgs = [_relative_ref(x, root) for x in r.images]
        if len(imgs) == 1:
            row["image"] = imgs[0]
        elif imgs:
            row["image"] = imgs
        row["conversations"] = [{"from": _TO_FROM[m["role"]], "value": m["content"]} for m in r.messages]
        rows.append(row)
    write_json(path, rows)
    return len(rows)


def detect_json_format(path: str | Path) -> str:
    """'sharegpt' | 'llava' | 'alpaca' | 'records' (domainvlm JSONL) | 'xrayglm' | 'r2gen' | 'iu-pairs' | 'unknown'.
    Decided from the first record's keys; 'unknown' lets the caller try other loaders or report the file."""
    items = load_items(path)
    if not items:
        return "unknown"
    first = items[0]
    if not isinstance(first, dict):
        return "unknown"
    if isinstance(first.get("annotations"), list):
        return "xrayglm"
    if any(isinstance(v, list) and v and isinstance(v[0], dict) and "image_path" in v[0] for v in first.values()):
        return "r2gen"
    if "findings" in first and "impression" in first and "image" in first:
        return "iu-pairs"
    if "messages" in first and "images" in first and "id" in first and ("labels" in first or "meta" in first):
        return "records"
    if "conversations" in first or "messages" in first:
        if "image" in first or ("id" in first and "images" not in first):
            return "llava"
        return "sharegpt"
    if "instruction" in first and "output" in first:
        return "alpaca"
    return "unknown"

