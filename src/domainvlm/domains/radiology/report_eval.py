"""Scores for report generation: language metrics, clinical efficacy, and a mode-collapse check.

* ``bleu_1..bleu_4``, ``meteor``, ``rouge_l``, ``cider``: :func:`.report_metrics.report_metrics` against the
  reference of each record's first assistant turn (``labels.report``). Language per record: ``labels.lang``,
  else ``meta.lang``, else detected from the reference (CJK -> "zh"). Mixed languages: each language group is
  scored on its own (``by_lang``) and each overall metric is the n-weighted mean of the groups' values
  (None when any group's value is None); tokenisations differ by language, so pooling one corpus is not
  meaningful, and CIDEr's IDF must come from one language.
* ``ce_*`` and ``ce_table``: :mod:`.clinical` (present = label 1 only, all 14 observations); generated texts
  are labelled in their own detected language, references in the record's language.
* ``collapse_rate``: share of answers identical (after strip/lower-case) to an answer given for a different
  image set whose reference differs: 0 for a model that looks at its input, 1.0 when every image gets the
  same text. Repeats between equal references do not count: IU-Xray's references repeat themselves (41% of
  the R2Gen test studies share their text with another study), so the references as answers score 0.
  ``distinct_answers`` counts different answers; ``most_common_answers`` lists the top 3 with counts.
"""

from __future__ import annotations

from collections import defaultdict

from ...data.record import Record
from .chexpert_labeler import detect_lang, label_report
from .clinical import clinical_efficacy_from_labels
from .report_metrics import report_metrics

LANG_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")


def reference_of(r: Record) -> str:
    ref = r.labels.get("report")
    if isinstance(ref, str):
        return ref
    return next(m["content"] for m in r.messages if m["role"] == "assistant")


def lang_of(r: Record, ref: str) -> str:
    lang = r.labels.get("lang") or r.meta.get("lang")
    return lang if lang in ("en", "zh") else detect_lang(ref)


def _weighted(groups: dict[str, dict], sizes: dict[str, int]) -> dict:
    n = sum(sizes.values())
    out = {}
    for k in LANG_METRICS:
        vals = [groups[g][k] for g in groups]
        out[k] = None if any(v is None for v in vals) else sum(groups[g][k] * sizes[g] for g in groups) / n
    return out


def _collapse_rate(records: list[Record], answers: list[str], refs: list[str]) -> float:
    """Share of answers also given for another image set with a different reference (see module doc)."""
    def norm(t):
        return " ".join(t.lower().split())

    seen: dict[str, set] = defaultdict(set)
    for r, a, ref in zip(records, answers, refs):
        seen[norm(a)].add((tuple(r.images), norm(ref)))
    dup = sum(1 for r, a, ref in zip(records, answers, refs)
              if any(im != tuple(r.images) and rf != norm(ref) for im, rf in seen[norm(a)]))
    return dup / len(answers)


def report_scores(records: list[Record], answers: list[str], meteor: bool = True) -> dict:
    """Metrics dict for ``domainvlm eval`` on report records (see module doc). ``meteor=False`` skips Java."""
    from ...evaluate.runner import most_common_answers

    if len(records) != len(answers):
        raise ValueError(f"{len(records)} records but {len(answers)} answers")
    if not records:
        raise ValueError("report_scores: no records")
    refs = [reference_of(r) for r in records]
    langs = [lang_of(r, ref) for r, ref in zip(records, refs)]
    idx: dict[str, list[int]] = defaultdict(list)
    for i, lg in enumerate(langs):
        idx[lg].append(i)
    groups = {lg: report_metrics([answers[i] for i in ii], [refs[i] for i in ii], lg, meteor=meteor)
              for lg, ii in sorted(idx.items())}
    sizes = {lg: len(ii) for lg, ii in idx.items()}
    out: dict = {"task": "report", "n": len(records)}
    out.update(next(iter(groups.values())) if len(groups) == 1 else _weighted(groups, sizes))
    if len(groups) > 1:
        out["by_lang"] = {lg: {"n": sizes[lg], **m} for lg, m in groups.items()}
    ce = clinical_efficacy_from_labels([label_report(a) for a in answers],
                                       [label_report(ref, lg) for ref, lg in zip(refs, langs)])
    out.update({k: v for k, v in ce.items() if k != "per_observation"})
    out["ce_table"] = ce["per_observation"]
    out["collapse_rate"] = _collapse_rate(records, answers, refs)
    out["distinct_answers"] = len({a.strip().lower() for a in answers})
    out["empty_answers"] = sum(1 for a in answers if not a.strip())
    out["most_common_answers"] = [{"answer": a, "count": c} for a, c in most_common_answers(answers, 3)]
    out["langs"] = dict(sorted(sizes.items()))
    return out
