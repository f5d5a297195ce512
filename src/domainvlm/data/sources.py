"""Any supported input file -> records. Detection is by content, not file name."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .record import Record, read_jsonl


def sniff(path: Path) -> str:
    """'wafer' | 'records' | 'json' (sharegpt / llava / xray json, decided by their own detectors) | 'xml' | ..."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        return "dir"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] == b"PK\x03\x04" or head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        return "wafer"  # npz (zip) or pickle: the wafer loader decides which and refuses pickles unless allowed
    text = head.decode("utf-8", errors="replace").lstrip()
    if text.startswith("<"):
        return "xml"
    if text.startswith("{"):
        first = open(path, encoding="utf-8").readline()
        try:
            d = json.loads(first)
        except json.JSONDecodeError:
            return "json"  # a multi-line JSON object
        if isinstance(d, dict) and "messages" in d and "images" in d:
            return "records"
        return "jsonl-other" if path.suffix == ".jsonl" else "json"
    if text.startswith("["):
        return "json"
    if not text and not path.read_bytes().strip():
        raise UserError(f"{path}: empty file (no records)")
    raise UserError(f"{path}: unrecognised data format (expected npz, pickle, JSON, JSONL or XML)")


def load_any(path: str | Path, split: str | None = None, allow_pickle: bool = False, langs=("en", "zh"),
             seed: int = 0, explain: bool = True, follow_up_frac: float = 0.0, image_root=None,
             convert_dir: Path | None = None, qa_per_report: int | None = None, taxonomy=None) -> list[Record]:
    """Load records from any supported source, optionally only one split. ``qa_per_report`` (X-ray sources):
    turn report records into instruction records with that many "is there X?" turns (data/report_instruct).
    ``taxonomy`` (labelled image collections): a taxonomy YAML/JSON or model folder; default: derived."""
    p = Path(path).expanduser().resolve()
    # [classify hook] a source a registered domain claims (ImageFolder, image/label CSV) is read by that domain
    from ..domains import sniff as domain_sniff

    dom = domain_sniff(p) if p.exists() else None
    if dom is not None and dom.read_source is not None:
        recs = dom.read_source(p, langs=langs, seed=seed, explain=explain, image_root=image_root, taxonomy=taxonomy)
        return [r for r in recs if r.meta.get("split") == split] if split else recs
    kind = sniff(p)
    if kind == "records":
        recs = list(read_jsonl(p))
    elif kind == "wafer":
        from .wafer_instruct import build_wafer_records
        from .wafer_sources import detect_format, load_wafer_file, save_wm811k_npz

        ws = load_wafer_file(p, allow_pickle=allow_pickle)
        ref_path = p
        if detect_format(p) == "wm811k-pickle":  # convert once so records never point into a pickle
            ref_path = (convert_dir or p.parent) / (p.stem + "_converted.npz")
            save_wm811k_npz(ws, ref_path)
        if split:
            if ws.split is None:
                raise UserError(f"{p}: has no split column, cannot select split {split!r}")
            idx = [i for i, s in enumerate(ws.split) if s == split]
            if not idx:
                raise UserError(f"{p}: no maps in split {split!r} (present: {', '.join(sorted(set(ws.split)))})")
        else:
            idx = None
        return build_wafer_records(ws, str(ref_path), langs, seed, explain, follow_up_frac, idx)
    else:
        recs = _load_other(p, kind, image_root)
        if qa_per_report is not None:
            from .report_instruct import build_report_records

            recs = build_report_records(recs, langs, qa_per_report, seed)
    if split:
        recs = [r for r in recs if r.meta.get("split") == split]
    return recs


def _load_other(p: Path, kind: str, image_root) -> list[Record]:
    if kind in ("xml", "dir", "jsonl-other"):
        from .xray_sources import load_xray

        return load_xray(p, image_root=image_root)
    from .formats import detect_json_format, read_llava, read_sharegpt

    fmt = detect_json_format(p)
    if fmt == "sharegpt":
        return read_sharegpt(p, image_root=image_root)
    if fmt == "llava":
        return read_llava(p, image_root=image_root)
    from .xray_sources import load_xray

    return load_xray(p, image_root=image_root)
