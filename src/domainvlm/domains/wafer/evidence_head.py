"""The evidence of the head's own diagnosis of one map: for 'where is the X?' answers, ``ask --evidence-png``,
the web UI and ``bench --evidence``. (Apart from evidence.py so that the head can call it without a circle.)"""

from __future__ import annotations

from .canvas import canonical_image
from .evidence import attributor
from .knowledge import parse_diagnosis
from .overlay import evidence_overlay


def diagnose_with_evidence(head, question: str, image, lang: str, only=None) -> tuple[tuple, list[dict]]:
    """The head's diagnosis of one canonical map for ``question``, and the evidence of its patterns (of those
    in ``only`` when given)."""
    q = (question or "").replace("<image>", "").strip()
    pv, g = head.pixel_values([image])
    labels = head.diagnose(pv, g, [head.prompt_ids([{"role": "user", "content": f"<image>\n{q}"}])], [lang])[0] or ()
    pats = tuple(p for p in labels if only is None or p in only)
    return labels, (attributor(head).evidence(image, pats, lang)[0] if pats else [])


def evidence_for(head, messages: list[dict], image, lang: str, answer: str | None = None) -> list[dict]:
    """Evidence of one map's diagnosis: of the patterns ``answer`` names (a diagnosis the head gave), else of
    the head's own diagnosis for the question of ``messages``."""
    image = canonical_image(image, head.size)
    labels = parse_diagnosis(answer, head.tax) if answer else None  # in the model's own classes
    if labels is None:
        return diagnose_with_evidence(head, messages[-1]["content"], image, lang)[1]
    return attributor(head).evidence(image, labels, lang)[0] if labels else []


def evidence_image(head, messages: list[dict], image, lang: str, answer: str | None = None):
    """The evidence overlay (PIL image) of one map's diagnosis."""
    return evidence_overlay(canonical_image(image, head.size), evidence_for(head, messages, image, lang, answer))


def assessment_overlay(head, assessment, image):
    """The evidence an annotated assessment already carries, drawn over its map (PIL image): no second
    attribution. None where there is nothing to draw on (no assessment, or an input that is no wafer map)."""
    from ...inference.assessment import OUT_OF_DOMAIN

    if assessment is None or assessment.reason == OUT_OF_DOMAIN or assessment.abstain:
        return None  # an abstention carries no evidence: nothing of a withheld guess is drawn
    return evidence_overlay(canonical_image(image, head.size), assessment.evidence, lang=assessment.lang)
