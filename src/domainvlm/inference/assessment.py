"""A structured, trust-carrying answer: what a constrained head concluded about one image, and how sure it is.

Shared by every domain with a constrained answer (wafer diagnosis, classify) and by every output path: the
text answer says in words what this says in fields (``ask --json``, ``predict --format jsonl``, the API's
``response_format`` json_schema). Heads fill ``labels``, ``confidence``, ``per_label`` and ``abstain``;
domain annotators (e.g. the wafer domain's evidence and map facts) add ``evidence`` and ``facts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Why an answer abstains (``reason``); None when it does not.
LOW_CONFIDENCE = "low_confidence"
OUT_OF_DOMAIN = "out_of_domain"  # not an input of the model's kind (a radiograph given to the wafer expert)
UNREADABLE = "unreadable"  # of the right kind but carrying no information (an empty or all-fail map)
NO_IMAGE = "no_image"  # a question that needs the input (a diagnosis, a class) asked without one (no_image.py)


@dataclass
class Assessment:
    labels: tuple[str, ...]  # what the head names (empty: the taxonomy's "none" answer)
    confidence: float | None  # calibrated probability of the named answer (the whole line); None: not scored
    per_label: dict[str, float] = field(default_factory=dict)  # marginal probability of each label
    abstain: bool = False
    reason: str | None = None  # LOW_CONFIDENCE / OUT_OF_DOMAIN / UNREADABLE / NO_IMAGE when abstaining
    detail: str | None = None  # why, as a short domain-defined key (e.g. the wafer input check's "colours")
    lang: str = "en"
    evidence: list[dict] = field(default_factory=list)  # per named label: where it is (domain-defined fields)
    facts: dict = field(default_factory=dict)  # numbers read from the input itself (domain-defined)
    notes: list[str] = field(default_factory=list)  # sentences annotators add to the text answer (its language)
    # not on the wire: the uncalibrated log-probability of every valid line (``lines`` order), for calibration
    line_logprobs: list[float] | None = None
    lines: tuple[tuple[str, ...], ...] | None = None

    def to_json(self) -> dict:
        """The wire form: ``{defects, confidence, per_pattern, abstain, evidence, facts}`` (+ ``reason``)."""
        conf = None if self.confidence is None else round(float(self.confidence), 4)
        return {"defects": list(self.labels), "confidence": conf,
                "per_pattern": {k: round(float(v), 4) for k, v in self.per_label.items()},
                "abstain": bool(self.abstain), "reason": self.reason, "evidence": self.evidence,
                "facts": self.facts}


# JSON schema of :meth:`Assessment.to_json` (served as the API's default schema for structured answers), in the
# keyword subset the server's constrained decoding accepts (inference/json_constraint.py: no minimum/maximum).
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "description": "the same answer in words (the head's text)"},
        "defects": {"type": "array", "items": {"type": "string"}},
        "confidence": {"type": ["number", "null"], "description": "probability in [0, 1]; null: not scored"},
        "per_pattern": {"type": "object", "additionalProperties": {"type": "number"}},
        "abstain": {"type": "boolean"},
        "reason": {"type": ["string", "null"]},
        "evidence": {"type": "array", "items": {"type": "object"}},
        "facts": {"type": "object"},
    },
    "required": ["defects", "confidence", "per_pattern", "abstain", "evidence", "facts"],
}
