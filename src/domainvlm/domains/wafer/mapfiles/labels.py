"""`data build` from fab map files: a labels CSV ``image,labels[,split]`` -> wafer instruction records.

``image`` is a map file (relative to the CSV's folder) with ``#K`` for a multi-wafer file; ``labels`` names
the patterns joined by ``+`` (``Center+Scratch``; ``;`` or ``|`` too, read as a labelled npz's labels:
patterns.split_labels; ``Normal`` or empty for none): the 8 known patterns, or the classes of a taxonomy of
the fab's own (``--taxonomy my_patterns.yaml``, which extends the 8 as ``train-expert taxonomy=`` does;
``eval`` reads with its model's taxonomy.json). Every reference and label is checked before anything is
written, so a bad row stops the build with its line and field.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from ....data.images import split_ref
from ....errors import UserError
from ....taxonomy import label_key
from ..patterns import split_labels
from . import get_wafer
from .hooks import kind

COLUMNS = ("image", "labels")


def source_kind(path: Path) -> str | None:
    """The wafer Domain's sniff: 'wafer-labels' for a labels CSV, 'wafer-mapfile' for a bare map file, else None."""
    if kind(path) is not None:
        return "wafer-mapfile"
    if path.suffix.lower() == ".csv" and path.is_file():
        with open(path, "rb") as fh:  # a sniff: a bad byte further down is read_labelled's one-line error
            head = fh.read(1 << 16).decode("utf-8-sig", errors="replace")
        rows = csv.reader(io.StringIO(head))
        cols = [h.strip().lower() for h in next(rows, [])]
        if all(c in cols for c in COLUMNS) and not _is_picture(next(rows, None), cols.index("image")):
            return "wafer-labels"
    return None


def _is_picture(row, col: int) -> bool:
    """The first row names an ordinary image (png/jpg/DICOM ...): a labelled photo collection, not map files."""
    from ....data.images import IMAGE_SUFFIXES

    return bool(row) and len(row) > col and Path(row[col].strip().partition("#")[0]).suffix.lower() in IMAGE_SUFFIXES


def _utf8_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # a spreadsheet's local code page (cp1252, GBK ...)
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the CSV as UTF-8") from None


def _labels(text: str, loc: str, tax, tax_source: str | None) -> tuple[str, ...]:
    return check_names(split_labels(text), f"{loc}: field 'labels'", tax, tax_source)


def check_names(names, where: str, tax, tax_source: str | None) -> tuple[str, ...]:
    """``names`` as a label set of ``tax`` (none words dropped); a class it lacks is one line at ``where``
    (a labels CSV's line and field, a labelled npz's key and map), suggesting --taxonomy."""
    none = {label_key(w) for w in ("Normal", "None", "正常", "无", tax.none_label or "Normal")}
    resolved = [(n, tax.resolve(n)) for n in names if n and label_key(n) not in none]  # 'edge ring', '中心'
    bad = next((n for n, c in resolved if c is None), None)
    if bad is not None:
        import difflib

        by_key = {label_key(n): n for n in tax.names}
        close = difflib.get_close_matches(label_key(bad), list(by_key), n=1, cutoff=0.75)
        guess = f" (did you mean {by_key[close[0]]!r}?)" if close else ""
        hint = (f"in neither the 8 known patterns nor {tax_source}" if tax_source else
                "(a class of your own: declare it in a taxonomy YAML and pass --taxonomy FILE)")
        raise UserError(f"{where}: unknown wafer pattern {bad!r} {hint}; known: {', '.join(tax.names)}{guess}")
    return tax.canonical([c for _, c in resolved])


def read_labelled(path: Path, tax=None, tax_source: str | None = None
                  ) -> list[tuple[str, tuple[str, ...], str | None, str]]:
    """(image ref FILE#K, defect set, split or None, location) per row; every wafer checked to exist and every
    label to be a class of ``tax`` (default: the 8 known patterns; ``tax_source`` names where it came from)."""
    from ..taxonomy import default

    tax = tax or default()
    rows, seen = [], {}
    with io.StringIO(_utf8_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
        for d in reader:
            loc = f"{path}:{reader.line_num}"
            if None in d:  # csv puts the cells past the header under None: a shifted or stray column
                raise UserError(f"{loc}: {len(d[None])} field(s) more than the header "
                                f"({','.join(reader.fieldnames)})")
            short = [k for k, v in d.items() if v is None]  # a row cut short: no cell at all, not an empty one
            if short and any((v or "").strip() for v in d.values()):
                raise UserError(f"{loc}: field {short[0]!r}: missing (the row has fewer cells than the header "
                                f"{','.join(reader.fieldnames)}; an empty labels cell, 'image,', means Normal)")
            if not any((v or "").strip() for v in d.values()):
                continue  # a blank row (',,' from a spreadsheet), as the picture CSV skips it
            img = (d.get("image") or "").strip()
            if not img:
                raise UserError(f"{loc}: field 'image': empty")
            p, idx = split_ref(img, path.parent)  # the last '#', as every image reference
            if kind(p) is None:
                raise UserError(f"{loc}: field 'image': {p} is not a wafer-map file (G85, E142, STDF, KLARF)"
                                if p.is_file() else f"{loc}: field 'image': {p}: no such file")
            if idx and not idx.isdigit():
                raise UserError(f"{loc}: field 'image': #{idx}: the wafer index must be a number")
            try:
                w = get_wafer(str(p), int(idx) if idx else None)
            except UserError as e:
                raise UserError(f"{loc}: field 'image': {e}") from None
            if not (w.grid > 0).any():  # all null bins: nothing to label, nothing to learn from
                raise UserError(f"{loc}: field 'image': {img}: the map has no dies (every site is a null bin)")
            ref = f"{p.resolve()}#{w.index}"
            if ref in seen:  # the same wafer twice: in two splits it leaks into the evaluation
                raise UserError(f"{loc}: field 'image': {img} is the same wafer as line {seen[ref]}")
            seen[ref] = reader.line_num
            rows.append((ref, _labels(d.get("labels", ""), loc, tax, tax_source),
                         (d.get("split") or "").strip() or None, loc))
    if not rows:
        raise UserError(f"{path}: no rows under the header image,labels")
    return rows


def build_records(path: Path, split=None, langs=("en", "zh"), seed: int = 0, explain: bool = True,
                  follow_up_frac: float = 0.0, taxonomy=None, model_dir=None):
    """The wafer Domain's read_source: records from a labels CSV (split chosen by its optional split column).
    ``taxonomy`` (a YAML/JSON file or model folder) and ``model_dir`` (eval's model): see taxonomy.for_source.
    Records of a taxonomy beyond the 8 patterns say ``labels.taxonomy: custom``, their answers name its classes."""
    from ..instruct import wafer_record
    from ..taxonomy import reading

    tax, own, src = reading(taxonomy, model_dir)
    rows = read_labelled(path, tax, src)
    if split is not None:
        rows = [r for r in rows if r[2] == split]
        if not rows:
            raise UserError(f"{path}: no rows in split {split!r} (column 'split')")
    rng = random.Random(seed)
    return [wafer_record(ref, defects, rng.choice(list(langs)), f"{path.stem}-{i}", rng, explain,
                         rng.random() < follow_up_frac, "custom" if own else "mixedwm38", sp, "fab-mapfile",
                         tax if own else None)
            for i, (ref, defects, sp, _) in enumerate(rows)]


def load_source(path: Path, source_kind_: str, **kw):
    if source_kind_ == "wafer-mapfile":
        raise UserError(f"{path}: a wafer-map file carries no pattern labels; list its wafers in a labels CSV "
                        f"(columns image,labels; e.g. '{path.name}#0,Center+Scratch') and pass that as --source")
    return build_records(path, **kw)


def labelled_maps(path: Path, tax, tax_source: str | None = None, split: str | None = None):
    """The wafers of a labels CSV as a WaferSet of ``tax``'s classes (taxonomy "custom"): train-expert's
    ``new_data`` / ``new_val`` / ``new_test`` may name a labels CSV of the fab's map files instead of an npz."""
    from ..sources import WaferSet

    rows = read_labelled(Path(path), tax, tax_source)
    if split is not None:
        rows = [r for r in rows if r[2] == split]
        if not rows:
            raise UserError(f"{path}: no rows in split {split!r} (column 'split')")
    maps = [get_wafer(ref.rpartition("#")[0], int(ref.rpartition("#")[2])).grid for ref, *_ in rows]
    return WaferSet(maps, [r[1] for r in rows], [r[2] or "" for r in rows] if any(r[2] for r in rows) else None,
                    "custom", "custom", str(path))
