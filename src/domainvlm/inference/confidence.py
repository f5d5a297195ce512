"""Confidence of a constrained answer: the model's probabilities over its valid answer lines, calibrated.

A head scores every valid answer line (log-probabilities under the model); :func:`distribution` turns them
into a distribution over the lines with the model folder's temperature, :func:`assessments` into
:class:`~.assessment.Assessment` objects: the chosen line's probability, per-label marginals (the summed
probability of the lines naming a label) and low-confidence abstention below the stored threshold.

The calibration (``calibration.json`` in the model folder, written by ``domainvlm calibrate``) holds the
temperature and the abstention threshold; a model without one uses T=1 and never abstains for low confidence.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .assessment import LOW_CONFIDENCE, Assessment

FILE = "calibration.json"


@dataclass
class Calibration:
    temperature: float = 1.0
    threshold: float | None = None  # abstain below this calibrated confidence (None: never for confidence)
    info: dict = field(default_factory=dict)  # how it was fitted (data, n, target risk, metrics before/after)

    @property
    def fitted(self) -> bool:
        return bool(self.info)


def load(model_dir) -> Calibration:
    """The model folder's calibration (the uncalibrated default when it has none or no folder is known)."""
    from ..errors import UserError

    p = Path(model_dir) / FILE if model_dir else None
    if p is None or not p.is_file():
        return Calibration()
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        t = float(d["temperature"])
        thr = d.get("threshold")
        thr = None if thr is None else float(thr)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{p}: not a calibration file ({e.__class__.__name__}: {e})") from None
    if not (math.isfinite(t) and t > 0) or (thr is not None and not 0 <= thr <= 1):
        raise UserError(f"{p}: temperature must be > 0 and threshold in [0, 1]")
    return Calibration(t, thr, {k: v for k, v in d.items() if k not in ("temperature", "threshold")})


def save(model_dir, cal: Calibration) -> Path:
    from ..io import write_json

    p = Path(model_dir) / FILE
    d = asdict(cal)
    write_json(p, {"temperature": d["temperature"], "threshold": d["threshold"], **d["info"]})  # atomic
    return p


def distribution(logprobs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(..., lines) log-probabilities -> probabilities over the valid lines after dividing by T."""
    return torch.softmax(logprobs.float() / float(temperature), dim=-1)


def membership(sets, names) -> torch.Tensor:
    """(lines, labels) 0/1: does line i name label j."""
    m = torch.zeros(len(sets), len(names))
    col = {n: j for j, n in enumerate(names)}
    for i, s in enumerate(sets):
        for lab in s:
            m[i, col[lab]] = 1.0
    return m


def assessments(probs: torch.Tensor, chosen: list[int], sets, names, langs, cal: Calibration,
                member: torch.Tensor | None = None, logprobs: torch.Tensor | None = None) -> list[Assessment]:
    """Assessments of B answers: ``probs`` (B, lines) calibrated, ``chosen`` the answered line per row.

    Tensor work stays on the probabilities' device; only the small results come back to the host."""
    member = membership(sets, names) if member is None else member
    marg = (probs @ member.to(probs.device, probs.dtype)).tolist()
    idx = torch.tensor(chosen, device=probs.device)
    conf = probs.gather(1, idx[:, None])[:, 0].tolist()
    raw = logprobs.float().tolist() if logprobs is not None else [None] * len(chosen)
    out = []
    for b, k in enumerate(chosen):
        low = cal.threshold is not None and conf[b] < cal.threshold
        out.append(Assessment(labels=tuple(sets[k]), confidence=conf[b],
                              per_label={n: marg[b][j] for j, n in enumerate(names)},
                              abstain=low, reason=LOW_CONFIDENCE if low else None, lang=langs[b],
                              line_logprobs=raw[b], lines=tuple(tuple(s) for s in sets)))
    return out


_LOW = {
    "en": "Uncertain: my confidence in this answer is {c:.1%}, below this model's review threshold of {t:.1%}; "
          "please have an expert check this image.",
    "zh": "不确定：我对这个回答的置信度为{c:.1%}，低于本模型的复核阈值{t:.1%}；请由专家复核这张图像。",
}
_CONF = {"en": "Confidence: {c:.1%}.", "zh": "置信度：{c:.1%}。"}


def low_confidence_note(a: Assessment, cal: Calibration) -> str:
    return _LOW.get(a.lang, _LOW["en"]).format(c=a.confidence, t=cal.threshold or 0.0)


def confidence_line(a: Assessment) -> str:
    return _CONF.get(a.lang, _CONF["en"]).format(c=a.confidence)


def with_confidence(text: str, a: Assessment, cal: Calibration) -> str:
    """An answer's text saying in words what the assessment says: the low-confidence note right after the
    answer line (which stays first: parsers read it), the confidence and any lines annotators added
    (``a.notes``) at the end."""
    lines = text.split("\n")
    if a.abstain and a.reason == LOW_CONFIDENCE:
        lines.insert(1, low_confidence_note(a, cal))
    tail = [confidence_line(a)] if a.confidence is not None else []
    return "\n".join([*lines, *a.notes, *tail])
