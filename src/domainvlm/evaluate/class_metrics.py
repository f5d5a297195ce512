"""Per-class precision/recall/F1 and the confusion matrix that every classification-style domain reports
(wafer patterns, labelled image collections), in one definition so their metrics.json files agree."""

from __future__ import annotations

from collections import Counter

UNPARSED, OTHER = "(unparsed)", "(other)"  # confusion columns: no parseable answer / a class not in the rows


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": tp + fn}


def label_prf(gold: list, pred: list, labels) -> dict:
    """P/R/F1 of each label over label sets: a label is predicted when the prediction's set holds it (a None
    prediction, i.e. no parseable answer, holds none) and present when the gold set holds it. Counted over the
    distinct (gold, prediction) pairs, of which there are few: the metrics of 50k maps take milliseconds."""
    pairs = Counter((_key(g), None if p is None else _key(p)) for g, p in zip(gold, pred))
    out = {}
    for c in labels:
        tp = fp = fn = 0
        for (g, p), n in pairs.items():
            hit = p is not None and c in p
            if c in g:
                tp, fn = (tp + n, fn) if hit else (tp, fn + n)
            elif hit:
                fp += n
        out[c] = prf(tp, fp, fn)
    return out


def _key(s):
    """A label set as a hashable value with the same ``in`` (lists and sets become tuples)."""
    return s if isinstance(s, (tuple, str, frozenset)) else tuple(s)


def mean_f1(per: dict, labels) -> float:
    """Macro-F1 over ``labels`` (those with support, as the callers choose them)."""
    labels = list(labels)
    return sum(per[c]["f1"] for c in labels) / len(labels) if labels else 0.0


def confusion(rows: list[str], gold: list[str], pred: list[str]) -> dict:
    """Counts of (gold row, predicted column); predictions outside ``rows`` must already be OTHER/UNPARSED."""
    cols = list(rows) + [OTHER, UNPARSED]
    idx = {c: i for i, c in enumerate(cols)}
    matrix = [[0] * len(cols) for _ in rows]
    for g, p in zip(gold, pred):
        matrix[idx[g]][idx[p]] += 1
    return {"rows": list(rows), "cols": cols, "matrix": matrix}
