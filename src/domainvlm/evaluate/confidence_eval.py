"""The confidence side of ``eval`` and ``calibrate``: switch a head's confidence on, pair its assessments
with the records' gold label sets, and measure (evaluate/calibration.py). Generic: the gold labels come from
the records' domain (``Domain.extra["gold_labels"]``: record -> label tuple)."""

from __future__ import annotations

from pathlib import Path

from .. import domains
from . import calibration as cm


def confidence_head(engine, uncalibrated: bool = False):
    """The engine's head with confidence scoring on (None if it has no structured answers); ``uncalibrated``
    also sets T = 1 and no threshold (what ``calibrate`` fits from)."""
    head = engine.answer_head
    if head is None or not hasattr(head, "assess"):
        return None
    if hasattr(head, "confidence"):
        head.confidence = True
    if uncalibrated:
        from ..inference.confidence import Calibration

        head.calibration = Calibration()
    return head


def pairs(records, answers) -> tuple[list, dict]:
    """[(assessment, gold labels)] of the scored answers, and counts of the rest (by abstention reason)."""
    gold_of = domains.get(records[0].labels["task"]).extra.get("gold_labels") if records else None
    out, other = [], {}
    for r, a in zip(records, answers):
        asm = getattr(a, "assessment", None)
        if gold_of is None or asm is None or asm.confidence is None:
            key = "no_assessment" if asm is None else (asm.reason or "not_scored")
            other[key] = other.get(key, 0) + 1
            continue
        out.append((asm, tuple(gold_of(r))))
    return out, other


def block(records, answers, threshold: float | None = None, head=None) -> dict | None:
    """eval's ``confidence`` metrics (None when no answer carries a confidence)."""
    got, other = pairs(records, answers)
    if not got:
        return None
    conf = [a.confidence for a, _ in got]
    correct = [cm.is_correct(a, g) for a, g in got]
    out = cm.metrics(conf, correct, threshold)
    out["not_scored"] = other  # e.g. out_of_domain abstentions: no confidence, not in the numbers above
    stats = getattr(head, "stats", None)
    if stats and stats.get("scored"):
        out["greedy_differs_from_argmax"] = stats["argmax_differs"] / stats["scored"]
    return out


def write_plot(metrics: dict, out_path) -> None:
    from .calibration_plot import plot_reliability

    png = Path(out_path).with_suffix(".reliability.png")
    c = metrics["confidence"]
    plot_reliability(c, png, f"{Path(str(metrics.get('data', ''))).name} {metrics.get('split') or ''} "
                             f"n={c['n']}: ECE {c['ece']:.4f}")
    metrics["reliability_png"] = str(png)
