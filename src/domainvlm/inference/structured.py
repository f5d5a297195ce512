"""Structured answers through the API's ``response_format`` json_schema: a head's Assessment as the JSON.

When the model has a head with structured answers (``head.assess``) and a request asks for JSON, a
conversation the head answers (a diagnosis of one image) gets the head's :class:`~.assessment.Assessment`
as JSON (``{answer, defects, confidence, per_pattern, abstain, reason, evidence, facts}``, schema
:data:`~.assessment.SCHEMA`) rather than free decoding constrained to the schema by a small language model.
It is used where that JSON is an instance of the requested schema: whole (with the ``answer`` text if the
schema allows it, else without), or cut to the schema's own properties (a client asking only for
``{defects}`` or ``{defects, confidence}`` gets the head's values, not what a small language model decodes
under the schema); every other conversation is decoded under the constraint, exactly as before.
"""

from __future__ import annotations

import json
from contextlib import contextmanager


@contextmanager
def trust(head, sampling, structured: bool):
    """For one batch: a structured answer always carries its confidence; ``sampling.annotate`` also fills
    evidence and facts (heads with ``enable_annotations``: a backward pass per image, so only when asked).
    The head's own settings are restored afterwards, so plain requests stay as fast as before."""
    annotate = bool(getattr(sampling, "annotate", False))
    if head is None or not (structured or annotate):
        yield
        return
    prev_conf, prev_ann = getattr(head, "confidence", None), list(getattr(head, "annotators", None) or [])
    if hasattr(head, "confidence"):
        head.confidence = True
    if annotate and hasattr(head, "enable_annotations"):
        head.enable_annotations()
    try:
        yield
    finally:
        if hasattr(head, "confidence"):
            head.confidence = prev_conf
        if hasattr(head, "annotators"):
            head.annotators = prev_ann


def applies(engine, sampling) -> bool:
    head = engine.answer_head
    return sampling.json_schema is not None and sampling.logprobs is None and hasattr(head, "assess")


def answers(head, convs, sampling) -> list:
    """One JSON Answer (carrying its assessment) or None (decode under the schema) per conversation."""
    from .generation import Answer
    from .json_constraint import state

    schema = json.loads(sampling.json_schema)
    got = head.answer(convs, sampling)  # under trust(): confidence on, annotations where asked
    out = []
    for ans in got:
        a = getattr(ans, "assessment", None)
        text = None
        if a is not None:
            full = {"answer": str(ans), **a.to_json()}
            props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            for obj in (full, a.to_json(), {k: full[k] for k in props if k in full}):
                s = json.dumps(obj, ensure_ascii=False)
                if state(schema, s) == "complete":
                    text = s
                    break
        out.append(None if text is None else Answer.make(text, assessment=a, completion_tokens=None))
    return out
