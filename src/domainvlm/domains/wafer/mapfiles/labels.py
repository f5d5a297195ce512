"""`data build` from fab map files: a labels CSV ``image,labels[,split]`` -> wafer instruction records.

``image`` is a map file (relative to the CSV's folder) with ``#K`` for a multi-wafer file; ``labels`` names
the patterns joined by ``+`` (``Center+Scratch``; ``Normal`` or empty for none). Every reference is opened
and checked before anything is written, so a bad row stops the build with its line and field.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from ..patterns import canonical_set
from ....errors import UserError
from . import get_wafer
from .hooks import kind

COLUMNS = ("image", "labels")


def source_kind(path: Path) -> str | None:
    """The wafer Domain's sniff: 'wafer-labels' for a labels CSV, 'wafer-mapfile' for a bare map file, else None."""
    if kind(path) is not None:
        return "wafer-mapfile"
    if path.suffix.lower() == ".csv" and path.is_file():
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
        cols = [h.strip().lower() for h in header]
        if all(c in cols for c in COLUMNS) and not _first_is_picture(path, cols.index("image")):
            return "wafer-labels"
    return None


def _first_is_picture(path: Path, col: int) -> bool:
    """The first row names an ordinary image (png/jpg/DICOM ...): a labelled photo collection, not map files."""
    from ....data.images import IMAGE_SUFFIXES

    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        next(rows, None)
        row = next(rows, None)
    return bool(row) and len(row) > col and Path(row[col].strip().partition("#")[0]).suffix.lower() in IMAGE_SUFFIXES


def _labels(text: str, loc: str) -> tuple[str, ...]:
    names = [t.strip() for t in re.split(r"[+;|]", text or "") if t.strip()]
    try:
        return canonical_set(names)
    except ValueError as e:
        raise UserError(f"{loc}: field 'labels': {e}") from None


def read_labelled(path: Path) -> list[tuple[str, tuple[str, ...], str | None, str]]:
    """(image ref FILE#K, defect set, split or None, location) per row; every wafer checked to exist."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
        for d in reader:
            loc = f"{path}:{reader.line_num}"
            img = (d.get("image") or "").strip()
            if not img:
                raise UserError(f"{loc}: field 'image': empty")
            file, _, idx = img.partition("#")
            p = Path(file) if Path(file).is_absolute() else path.parent / file
            if kind(p) is None:
                raise UserError(f"{loc}: field 'image': {p} is not a wafer-map file (G85, E142, STDF, KLARF)"
                                if p.is_file() else f"{loc}: field 'image': {p}: no such file")
            if idx and not idx.isdigit():
                raise UserError(f"{loc}: field 'image': #{idx}: the wafer index must be a number")
            try:
                w = get_wafer(str(p), int(idx) if idx else None)
            except UserError as e:
                raise UserError(f"{loc}: field 'image': {e}") from None
            rows.append((f"{p.resolve()}#{w.index}", _labels(d.get("labels", ""), loc),
                         (d.get("split") or "").strip() or None, loc))
    if not rows:
        raise UserError(f"{path}: no rows under the header image,labels")
    return rows


def build_records(path: Path, split=None, langs=("en", "zh"), seed: int = 0, explain: bool = True,
                  follow_up_frac: float = 0.0):
    """The wafer Domain's read_source: records from a labels CSV (split chosen by its optional split column)."""
    from ..instruct import wafer_record

    rows = read_labelled(path)
    if split is not None:
        rows = [r for r in rows if r[2] == split]
        if not rows:
            raise UserError(f"{path}: no rows in split {split!r} (column 'split')")
    rng = random.Random(seed)
    return [wafer_record(ref, defects, rng.choice(list(langs)), f"{path.stem}-{i}", rng, explain,
                         rng.random() < follow_up_frac, "mixedwm38", sp, "fab-mapfile")
            for i, (ref, defects, sp, _) in enumerate(rows)]


def load_source(path: Path, source_kind_: str, **kw):
    if source_kind_ == "wafer-mapfile":
        raise UserError(f"{path}: a wafer-map file carries no pattern labels; list its wafers in a labels CSV "
                        f"(columns image,labels; e.g. '{path.name}#0,Center+Scratch') and pass that as --source")
    return build_records(path, **kw)
