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
              "cider", "ce_f1_micro", "ce_f1_macro", "collapse_rate", "seconds"):
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
