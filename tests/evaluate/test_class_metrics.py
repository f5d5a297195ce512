"""label_prf counts over distinct (gold, prediction) pairs: the same numbers as counting map by map."""

from __future__ import annotations

import random

from domainvlm.evaluate.class_metrics import label_prf, prf


def _per_map(gold, pred, labels):  # the definition, one map at a time (the code before the speed-up)
    out = {}
    for c in labels:
        tp = sum(1 for g, p in zip(gold, pred) if p is not None and c in g and c in p)
        fp = sum(1 for g, p in zip(gold, pred) if p is not None and c not in g and c in p)
        fn = sum(1 for g, p in zip(gold, pred) if c in g and (p is None or c not in p))
        out[c] = prf(tp, fp, fn)
    return out


def test_label_prf_equals_the_per_map_count_on_random_cases():
    rng = random.Random(0)
    labels = ["a", "b", "c", "d", "e"]
    for case in range(200):
        n = rng.randint(0, 60)
        pick = lambda: rng.sample(labels, rng.randint(0, 3))  # noqa: E731
        kinds = (tuple, list, set)
        gold = [kinds[case % 3](pick()) for _ in range(n)]
        pred = [None if rng.random() < 0.1 else kinds[(case + 1) % 3](pick()) for _ in range(n)]
        asked = labels + ["zz"] if case % 2 else labels[:3]
        assert label_prf(gold, pred, asked) == _per_map(gold, pred, asked)
