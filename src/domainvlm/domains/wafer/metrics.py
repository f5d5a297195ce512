"""Wafer diagnosis metrics: exact match of the defect set, class-level and per-pattern P/R/F1, confusion.

The class of a map is its defect set (38 MixedWM38 classes) or its failure type (9 WM-811K classes).
An answer whose diagnosis cannot be parsed counts as wrong and is tallied in ``unparsed``.
"""

from __future__ import annotations

from ...evaluate.class_metrics import OTHER, UNPARSED, confusion, prf

from .patterns import set_name, wm811k_classes
from .taxonomy import default



def wafer_metrics(gold: list[tuple], pred: list[tuple | None], taxonomy: str = "mixedwm38", tax=None) -> dict:
    """``taxonomy``: the records' class vocabulary (mixedwm38: the taxonomy's answer sets; wm811k: its 9 failure
    types); ``tax``: the :class:`~domainvlm.taxonomy.Taxonomy` (default: the wafer taxonomy.json)."""
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    tax = tax or default()
    classes = [set_name(s) for s in tax.answer_sets()] if taxonomy == "mixedwm38" else wm811k_classes()
    n = len(gold)
    g_names = [set_name(g) for g in gold]
    p_names = [UNPARSED if p is None else (set_name(p) if set_name(p) in classes else OTHER) for p in pred]
    exact = sum(1 for g, p in zip(gold, pred) if p is not None and tuple(p) == tuple(g))
    present = [c for c in classes if c in set(g_names)]
    per_class = {}
    for c in classes:
        tp = sum(1 for g, p in zip(g_names, p_names) if g == c and p == c)
        fp = sum(1 for g, p in zip(g_names, p_names) if g != c and p == c)
        fn = sum(1 for g, p in zip(g_names, p_names) if g == c and p != c)
        per_class[c] = prf(tp, fp, fn)
    per_pattern = {}
    for pat in tax.names:
        tp = sum(1 for g, p in zip(gold, pred) if p is not None and pat in g and pat in p)
        fp = sum(1 for g, p in zip(gold, pred) if p is not None and pat not in g and pat in p)
        fn = sum(1 for g, p in zip(gold, pred) if pat in g and (p is None or pat not in p))
        per_pattern[pat] = prf(tp, fp, fn)
    conf = confusion(classes, g_names, p_names)
    unparsed = p_names.count(UNPARSED)
    return {
        "task": "wafer", "taxonomy": taxonomy, "n": n,
        "exact_match": exact / n if n else 0.0,
        "macro_f1": sum(per_class[c]["f1"] for c in present) / len(present) if present else 0.0,
        "macro_f1_classes": len(present),
        "pattern_macro_f1": sum(v["f1"] for v in per_pattern.values() if v["support"]) /
        max(1, sum(1 for v in per_pattern.values() if v["support"])),
        "per_class": per_class, "per_pattern": per_pattern,
        "confusion": conf,
        "unparsed": unparsed, "unparsed_rate": unparsed / n if n else 0.0,
        "normal_label": tax.none_label,
    }
