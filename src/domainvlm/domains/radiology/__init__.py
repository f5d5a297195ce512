"""The chest X-ray report domain (``labels.task == "report"``): report readers (XrayGLM, R2Gen, IU-Xray pairs,
OpenI XML, the native MIMIC-CXR tree), report prompts and the "is there X?" instruction builder, the
CheXpert-style labeler (``report-labels``), and the report metrics (BLEU..CIDEr, clinical efficacy, mode
collapse).

Registered under its records' task name, "report"; everything is imported on first use.
"""

from __future__ import annotations

from pathlib import Path

from .. import Domain, register

NAME = "report"
_FORMATS = ("xrayglm", "r2gen", "iu-pairs")  # JSON layouts of report data sets (detected by data/formats)


def _score(records, answers) -> dict:
    from .report_eval import report_scores

    return report_scores(records, answers)


def _sniff(path) -> bool:
    """The MIMIC-CXR tree, OpenI XML (a file, or a folder holding .xml reports), JSON/JSONL in a report data set's layout, or
    sharegpt/LLaVA JSON whose first record asks a report prompt."""
    p = Path(path)
    from .mimic_cxr import is_mimic_cxr

    if is_mimic_cxr(p):  # the PhysioNet tree (files/pXX/...), its files/, or its split CSV
        return True
    if p.is_dir():
        return any(p.glob("*.xml"))
    if not p.is_file():
        return False
    if p.suffix.lower() == ".xml":
        return True
    with open(p, "rb") as fh:
        text = fh.read(512).removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").lstrip()  # BOM: Notepad
    if text.startswith("<"):
        return True
    if not text.startswith(("{", "[")):
        return False
    from ...data.formats import detect_json_format
    from ...errors import UserError

    try:
        fmt = detect_json_format(p)
        if fmt in ("sharegpt", "llava"):  # XrayQwen2VL's LLaMA-Factory file, an export of report records
            from ...data.formats import load_items
            from .sources import asks_for_report

            return asks_for_report(load_items(p)[0])
        return fmt in _FORMATS
    except UserError:  # not readable as JSON: not ours; the generic reader reports it
        return False


def _instruct(records, langs=("en", "zh"), qa_per_report: int | None = None, seed: int = 0, **_) -> list:
    from .instruct import build_report_records

    return records if qa_per_report is None else build_report_records(records, langs, qa_per_report, seed)


def _read_source(path, split=None, image_root=None, **opts) -> list:
    from .sources import load_xray

    recs = _instruct(load_xray(path, image_root=image_root), **opts)
    return [r for r in recs if r.meta.get("split") == split] if split else recs


register(Domain(name=NAME, score=_score, sniff=_sniff, read_source=_read_source, extra={"instruct": _instruct}))
