"""Accuracy at a coverage for several confidence rankings, from a ``domainvlm calibrate --scores`` file.

Asks whether the 99.5 % accuracy-at-95 %-coverage goal is a ranking problem (another confidence would abstain on
the right maps) or an accuracy problem (the wrong answers are confident):

    domainvlm calibrate --data MIXEDWM38.npz --split val --out /tmp/cal --scores /tmp/scores.jsonl
    python bench/coverage_rankings.py /tmp/scores.jsonl --temperature 1.4463
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def accuracy_at(conf: np.ndarray, ok: np.ndarray, coverage: float) -> float:
    keep = np.argsort(-conf, kind="stable")[: int(round(coverage * len(conf)))]
    return float(ok[keep].mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scores", help="JSONL of calibrate --scores: gold, answered, line_logprobs")
    p.add_argument("--temperature", type=float, default=1.0, help="the model's fitted temperature")
    p.add_argument("--coverage", type=float, default=0.95)
    args = p.parse_args()
    rows = [json.loads(x) for x in open(args.scores, encoding="utf-8")]
    lp = np.array([r["line_logprobs"] for r in rows]) / args.temperature
    gold, ans = np.array([r["gold"] for r in rows]), np.array([r["answered"] for r in rows])
    prob = np.exp(lp - lp.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    ok = gold == ans
    top = np.sort(prob, 1)
    p_ans = prob[np.arange(len(ans)), ans]
    # per answered line, its accuracy on the other half of the maps (cross-fitted, so no map scores itself)
    half = np.random.default_rng(0).permutation(len(ans)) < len(ans) // 2
    prior = np.zeros(len(ans))
    for h in (True, False):
        for c in np.unique(ans):
            fit, use = (half == h) & (ans == c), (half != h) & (ans == c)
            prior[use] = (ok[fit].sum() + 1) / (fit.sum() + 2)
    ranks = {"line probability (shipped)": p_ans, "top-1 minus top-2": top[:, -1] - top[:, -2],
             "negative entropy": (prob * np.log(prob + 1e-12)).sum(1), "answered line's val accuracy": prior,
             "line probability x line accuracy": p_ans * prior}
    print(f"{len(rows)} answers, accuracy {ok.mean():.4f}; wrong answers' confidence p25/p50/p75: "
          + " / ".join(f"{q:.3f}" for q in np.percentile(p_ans[~ok], [25, 50, 75])))
    print(f"| ranking | accuracy at {args.coverage:.0%} coverage |\n|---|---:|")
    for name, conf in ranks.items():
        print(f"| {name} | {accuracy_at(conf, ok, args.coverage):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
