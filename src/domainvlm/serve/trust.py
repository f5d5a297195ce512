"""The trust extensions of the HTTP API: a head's full structured answer and its evidence overlay, opt-in.

* ``response_format`` json_schema whose schema names ``evidence`` or ``facts`` (the Assessment schema,
  :data:`domainvlm.inference.assessment.SCHEMA`): the head's Assessment comes back with its evidence and map
  facts filled;
* ``evidence_png: true`` (chat completions and ``POST /``): the evidence drawn over the image, as a PNG data URL
  (``data:image/png;base64,...``) beside the answer; ``assessment: true`` (``POST /``) adds the Assessment JSON.

Evidence costs a backward pass per image, so a request gets it only when it asks: such requests carry
``Sampling.annotate`` and the micro-batcher never batches them with plain ones (it groups by sampling).
Only the answer head's interface is used here (``assess``, ``evidence_overlay``): no domain is imported.
"""

from __future__ import annotations

import base64
import io
import json

from .errors import ApiError


def schema_wants_annotations(schema_json: str | None) -> bool:
    """Whether a requested schema has room for evidence or facts (then they are filled)."""
    if not schema_json:
        return False
    props = json.loads(schema_json).get("properties")
    return isinstance(props, dict) and bool({"evidence", "facts"} & set(props))


def require(engine, field: str, what: str) -> None:
    """400 naming ``field`` when the served model's head cannot give ``what`` ('evidence' or 'assessment')."""
    head = engine.answer_head if engine.has_head else None
    attr = "evidence_overlay" if what == "evidence" else "assess"
    if head is None or not hasattr(head, attr):
        raise ApiError(400, f"{field}: the served model has no answer head that gives {what}", param=field)


def png_data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def overlay(engine, answer, images) -> str | None:
    """The evidence of ``answer`` (an annotated head answer) drawn over its image, as a PNG data URL; None
    where the head did not assess the conversation (a follow-up turn, no image), where the answer abstained (its
    JSON has no evidence, so the picture must not show the withheld guess: as ``ask --evidence-png``) or there is
    nothing to draw on. Drawing only: the evidence was computed with the answer."""
    a = getattr(answer, "assessment", None)
    if a is None or a.abstain or len(images) != 1:
        return None
    img = engine.answer_head.evidence_overlay(a, images[0])
    return None if img is None else png_data_url(img)


def assessment_json(answer) -> dict | None:
    a = getattr(answer, "assessment", None)
    return None if a is None else {"answer": str(answer), **a.to_json()}
