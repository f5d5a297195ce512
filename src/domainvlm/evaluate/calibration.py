"""How trustworthy a constrained head's confidence is, and the calibration that makes it so.

Generic over domains: inputs are the heads' :class:`~domainvlm.inference.assessment.Assessment` objects and each
record's gold label set (``Domain.extra["gold_labels"]``).

* :func:`fit_temperature`: the temperature T minimising the negative log-likelihood of the gold line under
  softmax(line log-probs / T) (temperature scaling, Guo et al. 2017); 1-D and convex in 1/T, solved by a
  golden-section search; :func:`at_bound` says when the fit ran to an end of its range (T not identified).
* :func:`metrics`: ECE over 15 equal-width bins of the answer's confidence, the Brier score of that
  confidence (mean (p - correct)^2), accuracy at 95% / 90% coverage (the most confident answers kept), the
  risk-coverage curve and the reliability table.
* :func:`threshold_for_risk`: the abstention threshold with the highest coverage whose risk (error rate of
  the answers kept) on these records is at most the target.
"""

from __future__ import annotations

import math

import torch

BINS = 15
COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)


def gold_index(a, gold) -> int | None:
    """Index of the gold label set among the assessment's lines (None: not one of them)."""
    want = frozenset(gold)
    return next((i for i, s in enumerate(a.lines or ()) if frozenset(s) == want), None)


def is_correct(a, gold) -> bool:
    return frozenset(a.labels) == frozenset(gold)


def nll(logprobs: torch.Tensor, gold: torch.Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(logprobs / temperature, gold))


T_RANGE = (0.02, 50.0)  # where fit_temperature searches


def fit_temperature(logprobs: torch.Tensor, gold: torch.Tensor, lo: float = T_RANGE[0],
                    hi: float = T_RANGE[1]) -> float:
    """T in [lo, hi] minimising the NLL of ``gold`` (N,) under softmax(``logprobs`` (N, lines) / T)."""
    lp = logprobs.double().clamp_min(-1e4)  # -inf lines (impossible under the model) stay finite
    f = lambda inv: nll(lp, gold, 1.0 / inv)  # noqa: E731 - convex in the inverse temperature
    a, b = 1.0 / hi, 1.0 / lo
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return 1.0 / ((a + b) / 2)


def at_bound(t: float, lo: float = T_RANGE[0], hi: float = T_RANGE[1]) -> str | None:
    """'lower' / 'upper' when a fitted T sits at an end of its search range, else None. The NLL then still
    falls beyond the range, so T is not identified by the data: 'lower' when the gold line is the top line of
    (nearly) every record (no errors: T -> 0, every confidence ~100%), 'upper' when the line scores do not
    favour the gold line (T -> inf, every confidence flattened)."""
    if t <= lo * (1 + 1e-3):
        return "lower"
    return "upper" if t >= hi * (1 - 1e-3) else None


def reliability(conf: list[float], correct: list[bool], bins: int = BINS) -> list[dict]:
    """Equal-width confidence bins: count, mean confidence, accuracy (empty bins included with n 0)."""
    out = []
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        idx = [i for i, c in enumerate(conf) if lo <= c < hi or (k == bins - 1 and c == 1.0)]
        n = len(idx)
        out.append({"lo": round(lo, 4), "hi": round(hi, 4), "n": n,
                    "confidence": sum(conf[i] for i in idx) / n if n else None,
                    "accuracy": sum(correct[i] for i in idx) / n if n else None})
    return out


def ece(conf: list[float], correct: list[bool], bins: int = BINS) -> float:
    n = len(conf)
    return sum(b["n"] / n * abs(b["confidence"] - b["accuracy"]) for b in reliability(conf, correct, bins)
               if b["n"]) if n else 0.0


def _ranked(conf, correct) -> list[bool]:
    """Correctness in order of decreasing confidence (stable: ties keep record order)."""
    return [correct[i] for i in sorted(range(len(conf)), key=lambda i: -conf[i])]


def accuracy_at_coverage(conf, correct, coverage: float) -> float:
    r = _ranked(conf, correct)
    k = max(1, math.ceil(coverage * len(r) - 1e-9))
    return sum(r[:k]) / k if r else 0.0


def risk_coverage(conf, correct) -> list[dict]:
    """Risk (error rate of the kept answers) at fixed coverages, and the confidence where each begins."""
    r = _ranked(conf, correct)
    s = sorted(conf, reverse=True)
    out = []
    for cov in COVERAGES:
        k = max(1, math.ceil(cov * len(r) - 1e-9))
        out.append({"coverage": cov, "risk": round(1 - sum(r[:k]) / k, 6), "threshold": round(s[k - 1], 6)})
    return out


def aurc(conf, correct) -> float:
    """Area under the risk-coverage curve (every coverage step): lower is better."""
    r = _ranked(conf, correct)
    err, total = 0, 0.0
    for k, ok in enumerate(r, 1):
        err += not ok
        total += err / k
    return total / len(r) if r else 0.0


def threshold_for_risk(conf, correct, target: float) -> tuple[float, float, float]:
    """(threshold, coverage, risk): answer when confidence >= threshold. The largest kept set whose risk is
    <= ``target``; cuts only between distinct confidences, so ties are kept or dropped together. If no
    non-empty set meets the target, the threshold keeps only the most confident answers."""
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    best, err = None, 0
    for k, i in enumerate(order, 1):
        err += not correct[i]
        boundary = k == len(order) or conf[order[k]] < conf[i]
        if boundary and err / k <= target:
            best = (conf[i], k, err)
    if best is None:
        top = conf[order[0]]
        k = sum(1 for c in conf if c >= top)
        best = (top, k, sum(1 for i in order[:k] if not correct[i]))
    thr, k, e = best
    if k == len(order):
        thr = 0.0  # everything answered: no low-confidence abstention on these records
    return thr, k / len(order), e / k


def metrics(conf: list[float], correct: list[bool], threshold: float | None = None) -> dict:
    """The ``confidence`` block of eval's metrics."""
    n = len(conf)
    if not n:
        return {"n": 0}
    out = {"n": n, "ece": ece(conf, correct), "brier": sum((c - k) ** 2 for c, k in zip(conf, correct)) / n,
           "accuracy": sum(correct) / n,
           "accuracy_at_coverage_95": accuracy_at_coverage(conf, correct, 0.95),
           "accuracy_at_coverage_90": accuracy_at_coverage(conf, correct, 0.90),
           "aurc": aurc(conf, correct), "risk_coverage": risk_coverage(conf, correct),
           "reliability": reliability(conf, correct), "bins": BINS}
    if threshold is not None:
        kept = [k for c, k in zip(conf, correct) if c >= threshold]
        out.update(threshold=threshold, abstain_rate=1 - len(kept) / n,
                   risk_at_threshold=(1 - sum(kept) / len(kept)) if kept else 0.0)
    return out
