"""Clinical efficacy (CE): precision / recall / F1 of CheXpert observations extracted from generated reports
against those extracted from the reference reports (both by :mod:`domainvlm.domain.chexpert_labeler`).

Convention (as in R2Gen-line papers' CE metrics): an observation counts as present only when labelled 1;
uncertain (-1) and not mentioned (None) count as absent, as does 0. All 14 observations, including
"No Finding" and "Support Devices", take part. Micro = pooled tp/fp/fn over observations and reports;
macro = the unweighted mean of the per-observation precision / recall / F1 over all 14 observations
(sklearn's ``average="macro"``), with 0/0 taken as 0 (sklearn's ``zero_division=0``), so an observation
absent from both sides lowers macro scores: compare macro numbers only on the same evaluation set.
"""

from __future__ import annotations

from .chexpert_labeler import OBSERVATIONS, label_report


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return _div(2 * p * r, p + r)


def clinical_efficacy_from_labels(pred_labels: list[dict], ref_labels: list[dict]) -> dict:
    """CE metrics from label dicts (observation -> 1 | 0 | -1 | None); missing keys count as None."""
    if len(pred_labels) != len(ref_labels):
        raise ValueError(f"{len(pred_labels)} predicted label sets but {len(ref_labels)} references")
    per, tp_all, fp_all, fn_all = {}, 0, 0, 0
    for o in OBSERVATIONS:
        tp = fp = fn = 0
        for p, r in zip(pred_labels, ref_labels):
            pp, rr = p.get(o) == 1, r.get(o) == 1
            tp += pp and rr
            fp += pp and not rr
            fn += rr and not pp
        prec, rec = _div(tp, tp + fp), _div(tp, tp + fn)
        per[o] = {"precision": prec, "recall": rec, "f1": _f1(prec, rec), "support": tp + fn,
                  "tp": tp, "fp": fp, "fn": fn}
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    p_mi, r_mi = _div(tp_all, tp_all + fp_all), _div(tp_all, tp_all + fn_all)
    n = len(OBSERVATIONS)
    return {
        "ce_precision_micro": p_mi, "ce_recall_micro": r_mi, "ce_f1_micro": _f1(p_mi, r_mi),
        "ce_precision_macro": sum(v["precision"] for v in per.values()) / n,
        "ce_recall_macro": sum(v["recall"] for v in per.values()) / n,
        "ce_f1_macro": sum(v["f1"] for v in per.values()) / n,
        "per_observation": per,
    }


def clinical_efficacy(generated: list[str], references: list[str], lang: str | None = None) -> dict:
    """Label both sides with the rule-based labeler (``lang`` None: detected per text), then CE metrics."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    return clinical_efficacy_from_labels([label_report(t, lang) for t in generated],
                                         [label_report(t, lang) for t in references])
