"""Wafer diagnosis metrics: exact match of the defect set, class-level and per-pattern P/R/F1, confusion.

The class of a map is its defect set (38 MixedWM38 classes) or its failure type (9 WM-811K classes).
An answer whose diagnosis cannot be parsed counts as wrong and is tallied in ``unparsed``.
"""

from __future__ import annotations

from ...evaluate.class_metrics import OTHER, UNPARSED, confusion, label_prf, mean_f1

from .patterns import PATTERNS, set_key, wm811k_classes
from .taxonomy import default


def wafer_metrics(gold: list[tuple], pred: list[tuple | None], taxonomy: str = "mixedwm38", tax=None) -> dict:
    """``taxonomy``: the records' class vocabulary (wm811k: its 9 failure types; mixedwm38 or a fab's own
    "custom": the taxonomy's answer sets); ``tax``: the :class:`~domainvlm.taxonomy.Taxonomy` (default: the
    wafer taxonomy.json)."""
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    tax = tax or default()
    name = lambda s: set_key(s, tax)  # noqa: E731 - a model's taxonomy may add classes to the 8 patterns
    classes = wm811k_classes() if taxonomy == "wm811k" else list(dict.fromkeys(name(s) for s in tax.answer_sets()))
    n = len(gold)
    g_names = [name(g) for g in gold]
    p_names = [UNPARSED if p is None else (name(p) if name(p) in classes else OTHER) for p in pred]
    exact = sum(1 for g, p in zip(gold, pred) if p is not None and tuple(p) == tuple(g))
    present = [c for c in classes if c in set(g_names)]
    per_class = label_prf([(g,) for g in g_names], [(p,) for p in p_names], classes)  # one class per map
    per_pattern = label_prf(gold, pred, tax.names)
    conf = confusion(classes, g_names, p_names)
    unparsed = p_names.count(UNPARSED)
    return {
        "task": "wafer", "taxonomy": taxonomy, "n": n,
        "exact_match": exact / n if n else 0.0,
        "macro_f1": mean_f1(per_class, present),
        "macro_f1_classes": len(present),
        "pattern_macro_f1": mean_f1(per_pattern, [c for c, v in per_pattern.items() if v["support"]]),
        "per_class": per_class, "per_pattern": per_pattern,
        "confusion": conf,
        "unparsed": unparsed, "unparsed_rate": unparsed / n if n else 0.0,
        "normal_label": tax.none_label,
    }


def added_class_f1(metrics: dict, tax) -> dict:
    """F1 of each class the taxonomy adds to the 8 known patterns (from the per-pattern P/R/F1), and their mean."""
    added = [n for n in tax.names if n not in PATTERNS and metrics["per_pattern"].get(n, {}).get("support")]
    f1 = {n: round(metrics["per_pattern"][n]["f1"], 4) for n in added}
    return {"new_class_f1": sum(f1.values()) / len(f1) if f1 else 0.0, "new_class_f1_per_class": f1}


def check_records(records, model_dir=None):
    """The taxonomy of the model in ``model_dir`` (its taxonomy.json; the 8 known patterns without one), after
    checking that it has every class the records' gold label sets name (one line naming the first record that
    does not, before any answer is generated)."""
    from ...errors import UserError
    from .taxonomy import for_model_dir

    tax = for_model_dir(model_dir)
    known = set(tax.names) | {tax.none_label, "Normal"}
    sets = {tax.canonical(s) for s in tax.answer_sets()}
    seen = set()  # distinct (label set, vocabulary): a few dozen among 10^4-10^5 records
    for r in records:
        key = (tuple(r.labels["defects"]), r.labels.get("taxonomy") == "wm811k")
        if key in seen:
            continue
        seen.add(key)
        bad = next((c for c in key[0] if c not in known), None)
        if bad is not None:
            where = f"{model_dir}/taxonomy.json" if model_dir else "the 8 known patterns"
            raise UserError(f"record {r.id!r} field 'labels.defects': class {bad!r} is not in the model's taxonomy "
                            f"({where}: {', '.join(tax.names)}); continue the model on a taxonomy with it first "
                            f"(domainvlm train-expert init_model=MODEL taxonomy=YAML)")
        if not key[1] and tax.canonical(key[0]) not in sets:  # WM-811K: one failure type per map, its 9 classes
            raise UserError(f"record {r.id!r} field 'labels.defects': {'+'.join(key[0])} is no answer of the "
                            f"model's taxonomy (a mixture it does not list under 'combinations'), so it cannot "
                            f"be scored")
    return tax


def score_records(records, answers, model_dir=None) -> dict:
    """The wafer Domain's score: answers parsed back into classes of the evaluated model's taxonomy."""
    from .knowledge import parse_diagnosis
    from .taxonomy import is_default

    tax = check_records(records, model_dir)
    tax = None if is_default(tax) else tax  # the 8 patterns: scored exactly as before taxonomies were data
    taxonomy = records[0].labels.get("taxonomy", "mixedwm38")
    gold = [tuple(r.labels["defects"]) for r in records]
    parsed = {a: parse_diagnosis(a, tax) for a in set(answers)}  # a head answers with a few dozen distinct texts
    return wafer_metrics(gold, [parsed[a] for a in answers], taxonomy, tax)
