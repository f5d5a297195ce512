"""Classification metrics: exact match of the label set, per-class P/R/F1, macro-F1, confusion matrix.

Single-label: a class's P/R/F1 counts answers naming it; multi-label: a class counts as present in an answer
when the answer's set holds it, and the confusion matrix is over label sets. An answer that does not parse
is wrong and tallied in ``unparsed``.
"""

from __future__ import annotations

from ...evaluate.class_metrics import OTHER, UNPARSED, confusion, label_prf, mean_f1

from .instruct import parse_answer



def set_name(labels, none: str = "none") -> str:
    return " + ".join(labels) if labels else none


def classify_metrics(gold: list[tuple], pred: list[tuple | None], classes: list[str], taxonomy: str = "",
                     none_label: str | None = None) -> dict:
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    n, none = len(gold), none_label or "none"
    exact = sum(1 for g, p in zip(gold, pred) if p is not None and set(p) == set(g))
    per_class = label_prf(gold, pred, classes)
    present = [c for c in classes if per_class[c]["support"]]
    order = {c: i for i, c in enumerate(classes)}
    key = lambda labs: set_name(sorted(labs, key=lambda x: order.get(x, len(order))), none)  # noqa: E731
    g_names = [key(g) for g in gold]
    rows = list(dict.fromkeys(sorted(set(g_names), key=lambda s: [order.get(x, 1e9) for x in s.split(" + ")])))
    if len(classes) and all(len(g) == 1 for g in gold):  # single-label: every class is a row, in taxonomy order
        rows = list(classes)
    p_names = [UNPARSED if p is None else (key(p) if key(p) in rows else OTHER) for p in pred]
    conf = confusion(rows, g_names, p_names)
    unparsed = p_names.count(UNPARSED)
    return {
        "task": "classify", "taxonomy": taxonomy, "n": n,
        "exact_match": exact / n if n else 0.0,
        "macro_f1": mean_f1(per_class, present),
        "macro_f1_classes": len(present),
        "per_class": per_class,
        "confusion": conf,
        "unparsed": unparsed, "unparsed_rate": unparsed / n if n else 0.0,
    }


def score(records, answers) -> dict:
    """Domain hook: metrics of answers to classify records (classes from the records' taxonomy when this
    process read it, else the gold labels seen)."""
    from .collection import known_taxonomy

    name = records[0].labels.get("taxonomy", "") if records else ""
    tax = known_taxonomy(name)
    gold = [tuple(r.labels.get("labels") or ()) for r in records]
    if tax is not None:
        classes, none = tax.names, tax.none_label
    else:
        classes, none = sorted({c for g in gold for c in g}), None
    pred = [parse_answer(a, classes, none) for a in answers]
    return classify_metrics(gold, pred, classes, name, none)


def eval_artifacts(metrics: dict, out_path) -> None:
    """The confusion PNG beside metrics.json."""
    from pathlib import Path

    from ...evaluate.plots import plot_confusion

    png = Path(out_path).with_suffix(".confusion.png")
    plot_confusion(metrics["confusion"], png, f"{metrics.get('taxonomy', '')} n={metrics['n']}")
    metrics["confusion_png"] = str(png)
