"""Labelled image lists: a CSV or JSONL of ``image,labels[,split]`` rows (sources.py reads folders).

CSV (``,`` ``;`` or tab separated, sniffed from the header): a header with an image column (``image``, ``file``,
``filename``, ``path``, ``image_path``, ...), a labels column (``labels``, ``label``, ``class``, ``category``, ...)
and optionally a split column (``split``, ``set``, ``subset``), in any case and column order, as spreadsheets
export them; UTF-8 with or without BOM; blank rows (empty lines, ``,,``) are skipped; several labels are
separated by ``;`` or given as a JSON list. JSONL: one object per line with the same keys. Every problem is one
line naming the file, row or field.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from pathlib import Path

from ...data.images import IMAGE_SUFFIXES
from ...errors import UserError
from .items import Item, split_name

# Column names as spreadsheets export them, in order of preference (compared after _key: case, spaces, '-')
IMAGE_KEYS = ("image", "file", "path", "filename", "file_name", "filepath", "file_path", "image_path", "image_file",
              "image_name", "img")
LABEL_KEYS = ("labels", "label", "class", "classes", "category", "categories", "class_name", "label_name")
SPLIT_KEYS = ("split", "set", "subset")


def _key(name) -> str:
    """A column name compared as written by hand or by Excel: 'Image Path', '"File"', 'CLASS' -> image_path..."""
    return re.sub(r"[\s-]+", "_", str(name or "").strip().lstrip("\ufeff").strip('"').strip().lower())


def _column(keys, names) -> str | None:
    """The first of ``keys`` among the (already _key'ed) ``names``."""
    return next((k for k in keys if k in names), None)


def _labels(value, where: str) -> tuple[str, ...]:
    if isinstance(value, list):
        out = value
    elif isinstance(value, str):
        v = value.strip()
        if v.startswith("["):
            try:
                out = json.loads(v)
            except json.JSONDecodeError:
                raise UserError(f"{where}: field 'labels': not a JSON list ({v[:40]!r})") from None
        else:
            out = [x for x in (s.strip() for s in v.split(";")) if x]
    elif value is None:
        out = []
    else:
        raise UserError(f"{where}: field 'labels': expected text or a list, got {type(value).__name__}")
    if not all(isinstance(x, str) for x in out):
        raise UserError(f"{where}: field 'labels': every label must be text")
    return tuple(unicodedata.normalize("NFC", x.strip()) for x in out)


def _local_path(ref: str, base: Path, where: str) -> Path:
    """A path as written, else with Windows separators (a list made on Windows: 'crazing\\1.jpg')."""
    p = Path(ref).expanduser()
    p = p if p.is_absolute() else base / p
    if "\\" not in ref or p.exists():
        return p
    if re.match(r"[A-Za-z]:[\\/]|\\\\", ref):  # C:\... or \\server\...: no such place here
        raise UserError(f"{where}: {ref!r} is a Windows drive or network path; write paths relative to the "
                        "list (or give --image-root)")
    return base / Path(*ref.split("\\"))


def _item(row: dict, base: Path, where: str) -> Item:
    """``row``: a CSV row or JSONL object (keys compared as :func:`_key` reads them; errors name them as written)."""
    names = {_key(k): k for k in reversed(list(row))}  # the first spelling of a name wins
    key, lkey, skey = (names.get(_column(keys, names)) for keys in (IMAGE_KEYS, LABEL_KEYS, SPLIT_KEYS))
    if key is None or lkey is None:
        raise UserError(f"{where}: needs fields 'image' and 'labels'")
    ref = row[key]
    if not isinstance(ref, str) or not ref.strip():
        raise UserError(f"{where}: field '{key}': must be a non-empty path")
    p = _local_path(ref.strip(), base, f"{where}: field '{key}'")
    split = row.get(skey) if skey is not None else None
    return Item(str(p.resolve()), _labels(row[lkey], where), split_name(split), where)


def read_csv(path: Path, image_root=None) -> list[Item]:
    from ...io import read_text

    base = Path(image_root) if image_root else path.parent
    text = read_text(path)  # a bad byte names file:line (a sniff may have read only the head)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n", 1)[0]) or ",")
        header = [(k or "").strip().lstrip("\ufeff").strip() for k in next(reader, [])]
        rows, prev = [], reader.line_num
        for r in reader:  # a row's first line in the file (a quoted field may span lines: an unclosed quote)
            if any(x.strip() for x in r):  # blank lines and rows of empty cells (',,', ';;') are no rows
                rows.append((prev + 1, r))
            prev = reader.line_num
    except csv.Error as e:
        raise UserError(f"{path}: not valid CSV ({e})") from None
    keys = [_key(k) for k in header]
    dup = next((h for h, k in zip(header, keys) if k and keys.count(k) > 1), None)
    if dup:
        raise UserError(f"{path}:1: column {dup!r} appears twice")
    if not rows:
        raise UserError(f"{path}: no rows (expected a header 'image,labels[,split]' and one row per image)")
    items = []
    for n, r in rows:
        if len(r) > len(header) and any(x.strip() for x in r[len(header):]):
            # e.g. 'x.jpg,scratch,inclusion': the second label was dropped; or a path with a comma, unquoted
            raise UserError(f"{path}:{n}: {len(r)} fields, the header has {len(header)} (several labels: "
                            "separate them with ';'; quote a field holding a comma)")
        r = r + [""] * (len(header) - len(r))  # short rows: missing trailing cells are empty, as DictReader has it
        items.append(_item(dict(zip(header, r)), base, f"{path}:{n}"))
    return items


def read_jsonl(path: Path, image_root=None) -> list[Item]:
    from ...data.record import iter_jsonl

    base = Path(image_root) if image_root else path.parent
    items = []
    for n, d in iter_jsonl(path):
        if not isinstance(d, dict):
            raise UserError(f"{path}:{n}: expected a JSON object")
        items.append(_item(d, base, f"{path}:{n}"))
    if not items:
        raise UserError(f"{path}: no rows")
    return items


def is_label_list(path: Path) -> bool:
    """A CSV with image and label columns, or a JSONL whose first object has them (and no 'messages')."""
    if not path.is_file():
        return False
    try:  # the head only, decoded leniently: a bad byte further on is read_csv's to name by line
        with open(path, "rb") as fh:
            head = fh.read(65536).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    first = head.split("\n", 1)[0].strip()
    if path.suffix.lower() == ".csv":
        delim = _delimiter(first)
        if delim is None:
            return False
        return _first_is_photo(head, [_key(c) for c in first.split(delim)], delim)
    if path.suffix.lower() in (".jsonl", ".json") and first.startswith("{"):
        try:
            d = json.loads(first)
        except json.JSONDecodeError:
            return False
        keys = {_key(k) for k in d} if isinstance(d, dict) else set()
        return isinstance(d, dict) and "messages" not in d and bool(keys & set(IMAGE_KEYS) and keys & set(LABEL_KEYS))
    return False


def _delimiter(header: str) -> str | None:
    """The header's separator: ',' or, as Excel writes CSV in many locales, ';' (or a tab); None when no
    separator gives both an image and a labels column."""
    for d in (",", ";", "\t"):
        cols = {_key(c) for c in header.strip().lstrip("\ufeff").split(d)}
        if cols & set(IMAGE_KEYS) and cols & set(LABEL_KEYS):
            return d
    return None


def _first_is_photo(head: str, cols: list[str], delim: str = ",") -> bool:
    """The first row of the file's ``head`` names an image file (png/jpg/...): a labels CSV of wafer-map files
    (FILE#K) is the wafer domain's, not a photo collection."""
    col = cols.index(_column(IMAGE_KEYS, cols))
    try:
        rows = csv.reader(io.StringIO(head, newline=""), delimiter=delim)
        next(rows, None)
        row = next((r for r in rows if any(x.strip() for x in r)), None)  # blank rows are skipped, as read_csv does
    except csv.Error:
        return True  # read_csv says what is wrong
    if not row or len(row) <= col:
        return True  # an empty list: read it and say so
    ref = row[col].strip()
    head, sep, idx = ref.rpartition("#")  # '#K' is the LAST '#', as data/images.resolve reads it: 'LOT#42.xml#3'
    return Path(head if sep and idx.strip().isdigit() else ref).suffix.lower() in IMAGE_SUFFIXES  # 'shot#1.png'
