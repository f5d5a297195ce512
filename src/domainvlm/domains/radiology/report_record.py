"""The report :class:`Record` every X-ray source builds (sources.py, mimic_cxr.py)."""

from __future__ import annotations

import re

from ...data.record import IMAGE_TOKEN, Record
from .prompts import LOADER_PROMPTS as PROMPTS

_CJK = re.compile(r"[\u4e00-\u9fff]")


def detect_lang(text: str) -> str:
    return "zh" if _CJK.search(text or "") else "en"


def make_report_record(rid, images, findings, impression, *, source, split, lang, report=None,
                       prompt=None, **meta) -> Record:
    """One report record: user turn with one ``<image>`` per image, assistant turn = the report text.
    ``report`` defaults to findings + impression; pass it when a source has one undivided text."""
    findings = (findings or "").strip() or None
    impression = (impression or "").strip() or None
    if report is None:
        report = " ".join(t for t in (findings, impression) if t)
    report = report.strip()
    tokens = "\n".join([IMAGE_TOKEN] * len(images))
    user = f"{tokens}\n{prompt or PROMPTS[lang]}" if images else (prompt or PROMPTS[lang])
    return Record(id=str(rid), images=list(images),
                  messages=[{"role": "user", "content": user}, {"role": "assistant", "content": report}],
                  labels={"task": "report", "report": report, "findings": findings, "impression": impression},
                  meta={"source": source, "split": split, "lang": lang, **meta})
