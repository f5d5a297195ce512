"""Any supported input file -> records. Detection is by content, not file name; domain sources through the
registry (:mod:`domainvlm.domains`)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import domains
from ..errors import UserError
from .record import Record, read_jsonl


def sniff(path: Path) -> str:
    """'records' | 'binary' (zip / pickle) | 'json' | 'jsonl-other' | 'xml' | 'dir' | 'text': the content kind.
    Which reader takes a source is decided in :func:`load_any` (domains first, then the generic formats)."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        return "dir"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] == b"PK\x03\x04" or head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        return "binary"  # npz (zip) or pickle: a domain's reader decides which and refuses pickles unless allowed
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").lstrip()  # a BOM is not data
    if text.startswith("<"):
        return "xml"
    if text.startswith("{"):
        from ..io import iter_lines

        first = next(iter_lines(path))[1]
        try:
            d = json.loads(first)
        except json.JSONDecodeError:
            return "json"  # a multi-line JSON object
        # LLaMA-Factory's messages/images JSONL has the same two keys; our records also carry id/labels/meta
        if isinstance(d, dict) and "messages" in d and "images" in d and {"id", "labels", "meta"} & d.keys():
            return "records"
        return "jsonl-other" if path.suffix == ".jsonl" else "json"
    if text.startswith("["):
        return "json"
    if not text and not path.read_bytes().strip():
        raise UserError(f"{path}: empty file (no records)")
    return "text"  # e.g. a fab wafer-map file or a labels CSV: a domain may claim it (load_any)


def load_any(path: str | Path, split: str | None = None, allow_pickle: bool = False, langs=("en", "zh"),
             seed: int = 0, explain: bool = True, follow_up_frac: float = 0.0, image_root=None,
             convert_dir: Path | None = None, qa_per_report: int | None = None, taxonomy=None,
             model_dir=None, val_fraction: float = 0.0) -> list[Record]:
    """Load records from any supported source, optionally only one split: record JSONL, a source a domain
    claims (``Domain.sniff`` / ``read_source``: wafer npz, X-ray reports, labelled image folders, ...), or
    sharegpt / LLaVA JSON. The options are handed to the domain's reader, which uses those it knows;
    ``qa_per_report`` (X-ray sources): turn report records into instruction records with that many "is there
    X?" turns; ``taxonomy`` (labelled image collections, a labels CSV of wafer-map files): a taxonomy YAML/JSON
    or model folder; ``model_dir`` (eval): the evaluated model's folder, whose taxonomy a domain may read with;
    ``val_fraction`` (wafer npz / LSWMD.pkl without a val split): carve one from train."""
    from ..io import resolve_path

    p = resolve_path(path)
    kind = sniff(p)
    opts = dict(allow_pickle=allow_pickle, langs=langs, seed=seed, explain=explain, follow_up_frac=follow_up_frac,
                image_root=image_root, convert_dir=convert_dir, qa_per_report=qa_per_report)
    if taxonomy is not None:
        opts["taxonomy"] = taxonomy
    if model_dir is not None:
        opts["model_dir"] = model_dir
    if val_fraction:
        opts["val_fraction"] = val_fraction
    dom = None if kind == "records" else domains.sniff(p)
    if dom is not None:
        return dom.read_source(p, split=split, **opts)
    if kind == "records":
        recs = list(read_jsonl(p))
    else:
        recs = _load_generic(p, kind, image_root)
        if qa_per_report is not None:  # records of a task whose domain builds instruction data from them
            recs = _instruct(recs, opts)
    if split:
        recs = [r for r in recs if r.meta.get("split") == split]
    return recs


def _load_generic(p: Path, kind: str, image_root) -> list[Record]:
    from .formats import detect_json_format, read_llava, read_sharegpt

    fmt = detect_json_format(p) if kind in ("json", "jsonl-other") else None
    if fmt == "llava":
        return read_llava(p, image_root=image_root)
    if fmt in ("sharegpt", "records"):  # records: the role/content sharegpt variant plus id/labels/meta
        return read_sharegpt(p, image_root=image_root)
    if fmt == "alpaca":
        from .alpaca import read_alpaca

        return read_alpaca(p, image_root=image_root)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        raise UserError(_csv_hint(p))
    if p.is_dir() and not any(p.iterdir()):
        raise UserError(f"{p}: empty folder (expected class folders of images, or a data file)")
    known = ", ".join(sorted(d.name for d in domains.all_domains() if d.read_source))
    raise UserError(f"{p}: not a recognised data source (expected record JSONL, sharegpt, alpaca or LLaVA JSON, or a "
                    f"source of a domain: {known})")


def _csv_hint(p: Path) -> str:
    """Why no reader took a CSV: every labels CSV (wafer map files, labelled pictures) has the columns image and
    labels, so name what its header lacks, or the separator when it is no comma."""
    import csv

    with open(p, encoding="utf-8-sig", errors="replace", newline="") as fh:
        header = next(csv.reader(fh), [])
    cols = [c.strip().lower() for c in header]
    if len(cols) == 1 and any(sep in cols[0] for sep in ";\t|"):
        return (f"{p}:1: one column {header[0]!r}: separate the columns with commas (image,labels[,split]), "
                "not ';' or tabs")
    missing = [c for c in ("image", "labels") if c not in cols]
    if missing:
        return (f"{p}:1: column {' and '.join(map(repr, missing))} missing (a labels CSV has image,labels[,split]; "
                f"found: {', '.join(header) or 'no header'})")
    return f"{p}: a CSV with columns image,labels that no reader takes (rows of images or wafer-map files expected)"


def _instruct(recs: list[Record], opts: dict) -> list[Record]:
    for task in sorted({r.labels.get("task") for r in recs} - {None}):
        build = next((d.extra.get("instruct") for d in domains.all_domains() if d.name == task), None)
        if build is not None:
            recs = build(recs, **opts)
    return recs
