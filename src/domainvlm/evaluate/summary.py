"""Printed summary table of a metrics dict (rich)."""

from __future__ import annotations


def print_summary(m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    head = Table(title=f"{m.get('task', '')} evaluation, n={m.get('n')}")
    head.add_column("metric")
    head.add_column("value", justify="right")
    for k in ("exact_match", "macro_f1", "pattern_macro_f1", "unparsed", "bleu_1", "bleu_4", "meteor", "rouge_l",
              "cider", "ce_f1_micro", "ce_f1_macro", "collapse_rate", "distinct_answers", "seconds"):
        if k in m and m[k] is not None:
            v = m[k]
            head.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    c.print(head)
    if "per_class" in m:
        t = Table(title="per class")
        for col in ("class", "precision", "recall", "f1", "support"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for name, v in m["per_class"].items():
            if v["support"] or v["precision"]:
                t.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
        c.print(t)
    if "ce_table" in m:  # report eval: observations present in the references or in the answers
        t = Table(title="clinical efficacy per observation (present = label 1)")
        for col in ("observation", "precision", "recall", "f1", "support", "predicted"):
            t.add_column(col, justify="left" if col == "observation" else "right")
        for name, v in m["ce_table"].items():
            if v["support"] or v["tp"] + v["fp"]:
                t.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]),
                          str(v["tp"] + v["fp"]))
        c.print(t)
    if m.get("collapse_rate") and m.get("most_common_answers"):
        top = m["most_common_answers"][0]
        c.print(f"mode collapse: {m['collapse_rate']:.0%} of answers repeat one given for other images with other "
                f"references; most common ({top['count']}x): {top['answer'][:100]!r}")
