"""Per-class precision/recall/F1 and the confusion matrix that every classification-style domain reports
(wafer patterns, labelled image collections), in one definition so their metrics.json files agree."""

from __future__ import annotations

UNPARSED, OTHER = "(unparsed)", "(other)"  # confusion columns: no parseable answer / a class not in the rows


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": tp + fn}


def confusion(rows: list[str], gold: list[str], pred: list[str]) -> dict:
    """Counts of (gold row, predicted column); predictions outside ``rows`` must already be OTHER/UNPARSED."""
    cols = list(rows) + [OTHER, UNPARSED]
    idx = {c: i for i, c in enumerate(cols)}
    matrix = [[0] * len(cols) for _ in rows]
    for g, p in zip(gold, pred):
        matrix[idx[g]][idx[p]] += 1
    return {"rows": list(rows), "cols": cols, "matrix": matrix}
