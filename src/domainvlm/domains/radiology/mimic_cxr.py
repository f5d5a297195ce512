"""MIMIC-CXR as PhysioNet ships it -> one report :class:`Record` per study (``meta.source: mimic-cxr``).

The reports (MIMIC-CXR's ``mimic-cxr-reports.zip``, or its DICOM release) and the images (MIMIC-CXR-JPG) share
one layout, so they unpack into one tree or sit side by side::

    files/p10/p10000032/s50414267.txt              the study's free-text report
    files/p10/p10000032/s50414267/<dicom_id>.jpg   its images (.png and .dcm too; .jpg preferred)
    mimic-cxr-2.0.0-split.csv[.gz]                 dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-metadata.csv[.gz]              dicom_id, study_id, ..., ViewPosition (PA, AP, LATERAL, LL...)
    mimic-cxr-2.0.0-chexpert.csv[.gz]              subject_id, study_id, 14 observations (1.0/0.0/-1.0/blank)

The source is that folder, its ``files/`` (or one ``files/pXX``: only that part), or the split CSV. Reports or
images in another folder: ``image_root`` names it, or, when the source holds no report or no image at all, the
sibling folders holding a ``files/pXX`` tree are read too (said in a warning). Report = FINDINGS + IMPRESSION
(IMPRESSION alone when a study has no findings; not R2Gen's findings-only MIMIC annotation). Skipped and
counted in one warning line: studies with neither section, with no image file on disk, or absent from the
split CSV, and image files a CSV names that are not there. Images: in the metadata (else split) CSV's order,
frontal views (PA, AP) first, every view kept (``meta.views``); ``split`` from the split CSV (validate -> val);
``labels.chexpert`` from the CheXpert CSV (1, 0, -1, None, as the labeler writes them).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...data.record import Record
from ...errors import UserError
from ...io import read_text, resolve_path
from .chexpert_rules import OBSERVATIONS
from .report_record import make_report_record

log = logging.getLogger(__name__)

FRONTAL = ("PA", "AP")
_GROUP, _PATIENT, _STUDY = re.compile(r"p\d\d"), re.compile(r"p\d+"), re.compile(r"s(\d+)")
_IMAGE_RANK = {".jpg": 0, ".jpeg": 1, ".png": 2, ".dcm": 3}  # a dicom_id in both releases: its JPG
_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
_CSV = re.compile(r"mimic-cxr-[\w.]*-?(split|metadata|chexpert)\.csv(\.gz)?", re.IGNORECASE)

# ------------------------------------------------------------------------------------------------ report text
# A heading: an upper-case name and a colon at a line's start (as MIT-LCP's section_parser finds them).
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /&,()-]*?)[ \t]*:", re.MULTILINE)
_NAMES = {"findings": "findings", "finding": "findings", "impression": "impression", "impressions": "impression",
          "conclusion": "impression", "findings and impression": "impression", "findings/impression": "impression",
          "indication": "indication", "clinical indication": "indication", "reason for exam": "indication",
          "reason for examination": "indication", "comparison": "comparison", "comparisons": "comparison",
          "examination": "examination", "exam": "examination", "type of examination": "examination"}


def report_sections(text: str) -> dict[str, str]:
    """findings / impression / indication / comparison / examination of a MIMIC-CXR report, whitespace squashed.
    The text before the first heading (``FINAL REPORT``, ``WET READ: ...``) and other sections (TECHNIQUE,
    HISTORY, NOTIFICATION, ...) are dropped; a section given twice joins its texts."""
    heads = list(_HEADING.finditer(text))
    out: dict[str, str] = {}
    for h, nxt in zip(heads, heads[1:] + [None]):
        name = _NAMES.get(" ".join(h[1].lower().split()))
        body = " ".join(text[h.end(): nxt.start() if nxt else len(text)].split())
        if name and body:
            out[name] = f"{out[name]} {body}" if name in out else body
    return out


# ------------------------------------------------------------------------------------------------ the tree
@dataclass
class _Study:
    subject: str
    report: str | None = None
    images: dict = field(default_factory=dict)  # dicom_id -> path


def _dirs(folder, rx) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if rx.fullmatch(e.name) and e.is_dir()), key=lambda e: e.name)
    except OSError:
        return []


def _has_groups(folder: Path) -> bool:
    return bool(_dirs(folder, _GROUP))


def _walk(files: Path, studies: dict, only: str | None = None) -> None:
    """Reports and image files of ``files/pXX/pNNNNNNNN/`` (``only``: of that pXX) into ``studies``."""
    for group in _dirs(files, re.compile(re.escape(only)) if only else _GROUP):
        for patient in _dirs(group.path, _PATIENT):
            with os.scandir(patient.path) as it:
                entries = list(it)
            for e in entries:
                folder = e.is_dir()
                m = _STUDY.fullmatch(e.name if folder else e.name.removesuffix(".txt"))
                if m is None or not (folder or e.name.endswith(".txt")):
                    continue
                st = studies.setdefault(m[1], _Study(patient.name[1:]))
                if not folder:
                    st.report = st.report or e.path
                    continue
                with os.scandir(e.path) as it:
                    for f in it:
                        stem, ext = os.path.splitext(f.name)
                        if ext.lower() in _IMAGE_RANK and _rank(f.path) < _rank(st.images.get(stem)):
                            st.images[stem] = f.path


def _rank(path: str | None) -> int:
    return len(_IMAGE_RANK) if path is None else _IMAGE_RANK[os.path.splitext(path)[1].lower()]


def _is_group(path: Path) -> bool:
    return bool(_GROUP.fullmatch(path.name)) and path.parent.name == "files" and path.is_dir()


def _tree_root(path: Path) -> Path:
    """The folder holding ``files/`` and the CSVs, given it, its ``files/``, one ``files/pXX`` or a CSV in it."""
    if path.is_file():
        return path.parent
    if _is_group(path):
        return path.parent.parent
    return path.parent if path.name == "files" and _has_groups(path) else path


def _find_csvs(trees) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for t in trees:
        try:
            names = sorted(os.listdir(t))
        except OSError:  # not a folder, or not readable
            continue
        for name in names:
            m = _CSV.fullmatch(name)
            if m and (t / name).is_file():
                found.setdefault(m[1].lower(), t / name)  # .csv before .csv.gz
    return found


def _is_split_csv(path: Path) -> bool:
    m = _CSV.fullmatch(path.name)
    if m:  # PhysioNet's names (a gzip too broken to read is still the split CSV: the reader says so)
        return m[1].lower() == "split"
    if not path.name.lower().endswith((".csv", ".csv.gz")):
        return False
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if gz else open)(path, "rb") as fh:
            first = fh.read(4096).decode("utf-8-sig", "replace").split("\n", 1)[0]
    except (OSError, EOFError):
        return False
    return {"dicom_id", "study_id", "split"} <= {c.strip().strip('"') for c in first.split(",")}


def is_mimic_cxr(path) -> bool:
    """The MIMIC-CXR layout: a folder with ``files/pXX/``, that ``files/`` folder or one ``files/pXX`` of it
    (a part of the download), or a split CSV (or a folder holding one)."""
    p = Path(path)
    if p.is_file():
        return _is_split_csv(p)
    return p.is_dir() and (_has_groups(p / "files") or (p.name == "files" and _has_groups(p)) or _is_group(p)
                           or "split" in _find_csvs([p]))


# ------------------------------------------------------------------------------------------------ CSVs
def _csv_rows(path: Path):
    """(header, iterator of (line, row)); .csv.gz read as is (io.read_text gunzips)."""
    reader = csv.reader(io.StringIO(read_text(path, gunzip=True), newline=""))

    def rows():
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None

    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as e:
        raise UserError(f"{path}:1: not valid CSV ({e})") from None
    return header, rows()


def _col(path, header, name) -> int:
    if name not in header:
        raise UserError(f"{path}:1: column '{name}' missing (the header has: {', '.join(header) or 'nothing'})")
    return header.index(name)


def _cell(path, n, row, i, name, empty_ok=False) -> str:
    v = row[i].strip() if i < len(row) else ""
    if not v and not empty_ok:
        raise UserError(f"{path}:{n}: field '{name}': empty")
    return v


def _study_id(path, n, row, i) -> str:
    v = _cell(path, n, row, i, "study_id")
    if not v.removeprefix("s").isdigit():
        raise UserError(f"{path}:{n}: field 'study_id': {v!r} is not a study id")
    return v.removeprefix("s")


def _per_dicom(path: Path, column: str, parse) -> tuple[dict, dict]:
    """study_id -> [dicom_id, ...] in file order, and dicom_id -> ``parse(value of column, line)``."""
    header, rows = _csv_rows(path)
    d, s, c = (_col(path, header, k) for k in ("dicom_id", "study_id", column))
    order, value = {}, {}
    for n, row in rows:
        dicom = _cell(path, n, row, d, "dicom_id")
        order.setdefault(_study_id(path, n, row, s), []).append(dicom)
        value[dicom] = parse(_cell(path, n, row, c, column, empty_ok=True), n)
    return order, value


def _split_value(path):
    def parse(v, n):
        if v.lower() not in _SPLITS:
            raise UserError(f"{path}:{n}: field 'split': {v!r} is not train, validate or test")
        return _SPLITS[v.lower()]
    return parse


def _read_chexpert(path: Path) -> dict[str, dict]:
    header, rows = _csv_rows(path)
    s = _col(path, header, "study_id")
    obs = [(o, header.index(o)) for o in OBSERVATIONS if o in header]
    if not obs:
        raise UserError(f"{path}:1: no CheXpert observation column (such as 'Atelectasis' or 'No Finding')")
    out = {}
    for n, row in rows:
        vals = {}
        for o, i in obs:
            v = _cell(path, n, row, i, o, empty_ok=True)
            if v and v not in ("1.0", "0.0", "-1.0", "1", "0", "-1"):
                raise UserError(f"{path}:{n}: field '{o}': {v!r} is not 1.0, 0.0, -1.0 or blank")
            vals[o] = int(float(v)) if v else None
        out[_study_id(path, n, row, s)] = vals
    return out


# ------------------------------------------------------------------------------------------------ records
def _beside(root: Path, trees: list) -> list[Path]:
    try:
        sibs = sorted(p for p in root.parent.iterdir() if p.is_dir() and p not in trees)
    except OSError:
        return []
    return [p for p in sibs if _has_groups(p / "files")]


def _gather(path: Path, image_root) -> tuple[Path, list, dict]:
    root, only = _tree_root(path), path.name if _is_group(path) else None
    if image_root is not None and not resolve_path(image_root).is_dir():
        raise UserError(f"--image-root {image_root}: no such folder")
    trees = list(dict.fromkeys([root, *([_tree_root(resolve_path(image_root))] if image_root else [])]))
    studies: dict[str, _Study] = {}
    for t in trees:
        _walk(t / "files", studies, only)
    if not (any(s.report for s in studies.values()) and any(s.images for s in studies.values())):
        more = _beside(root, trees)
        for t in more:
            _walk(t / "files", studies, only)
        if more:
            log.warning("%s: also reading the MIMIC-CXR tree(s) beside it: %s", root, ", ".join(map(str, more)))
        trees += more
    what = " or ".join(map(str, trees))
    if not any(s.report for s in studies.values()):
        raise UserError(f"{what}: no MIMIC-CXR report (files/pXX/pNNNNNNNN/sNNNNNNNN.txt, from mimic-cxr-reports"
                        ".zip); unpack the reports into this tree or give their folder as --image-root")
    if not any(s.images for s in studies.values()):
        raise UserError(f"{what}: no MIMIC-CXR-JPG image (files/pXX/pNNNNNNNN/sNNNNNNNN/*.jpg); give the JPG "
                        "folder as --image-root")
    return root, trees, studies


def load_mimic_cxr(path, image_root=None, split=None, lang=None) -> list[Record]:
    """The MIMIC-CXR tree at ``path`` (module doc) as report records, optionally one split."""
    if lang not in (None, "en"):
        raise UserError(f"{path}: MIMIC-CXR reports are English; lang={lang!r} is not available")
    path = resolve_path(path)
    root, trees, studies = _gather(path, image_root)
    csvs = _find_csvs(trees)
    if path.is_file():
        csvs["split"] = path
    split_order, split_of = _per_dicom(csvs["split"], "split", _split_value(csvs["split"])) \
        if "split" in csvs else ({}, None)
    order, view = split_order, None
    if "metadata" in csvs:  # its order where it lists a study (they agree in the release)
        meta_order, view = _per_dicom(csvs["metadata"], "ViewPosition", lambda v, n: v.upper())
        order = {**split_order, **meta_order}
    chexpert = _read_chexpert(csvs["chexpert"]) if "chexpert" in csvs else {}
    out, skip, missing, no_report = [], dict(sections=0, image=0, listed=0), 0, 0
    for sid, st in sorted(studies.items(), key=lambda kv: (int(kv[1].subject), int(kv[0]))):
        if st.report is None:
            no_report += bool(st.images)
            continue
        sec = report_sections(read_text(st.report))
        if not (sec.get("findings") or sec.get("impression")):
            skip["sections"] += 1
            continue
        if split_of is not None and sid not in split_order:
            skip["listed"] += 1
            continue
        listed = order.get(sid, [])
        names = list(dict.fromkeys(listed)) + sorted(set(st.images) - set(listed))
        missing += sum(d not in st.images for d in names)
        names = [d for d in names if d in st.images]
        if view is not None:
            names.sort(key=lambda d: view.get(d) not in FRONTAL)  # stable: the CSV order within each kind
        if not names:
            skip["image"] += 1
            continue
        s = split_of[split_order[sid][0]] if split_of is not None else split
        if split and s != split:
            continue
        extra = {k: sec[k] for k in ("indication", "comparison", "examination") if k in sec}
        if view is not None:
            extra["views"] = [view.get(d) or None for d in names]
        rec = make_report_record(f"s{sid}", [st.images[d] for d in names], sec.get("findings"),
                                 sec.get("impression"), source="mimic-cxr", split=s, lang="en",
                                 study_id=int(sid), subject_id=int(st.subject), **extra)
        if sid in chexpert:
            rec.labels["chexpert"] = chexpert[sid]
        out.append(rec)
    _warn(root, skip, missing, no_report, csvs)
    if not out and not split:
        raise UserError(f"{root}: no usable MIMIC-CXR study (every report lacked findings and impression, an "
                        "image file or a split CSV row; see the warning above)")
    return out


def _warn(root, skip, missing, no_report, csvs) -> None:
    why = {"sections": "without FINDINGS or IMPRESSION", "image": "without an image file on disk",
           "listed": f"not in {csvs['split'].name if 'split' in csvs else 'the split CSV'}"}
    parts = [f"{n:,} {'study' if n == 1 else 'studies'} {why[k]}" for k, n in skip.items() if n]
    if missing:
        parts.append(f"{missing:,} image file(s) that the CSVs name but are not on disk")
    if no_report:
        parts.append(f"{no_report:,} image folder(s) without a report")
    if parts:
        log.warning("%s: skipped %s", root, "; ".join(parts))
