"""Calibration metrics and fitting on cases whose answers are known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from domainvlm.evaluate import calibration as cm


def test_ece_of_a_perfectly_and_a_badly_calibrated_set():
    # 10 answers at 0.8 of which 8 right: calibrated; the same answers all wrong: ECE 0.8
    assert cm.ece([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    assert cm.ece([0.8] * 10, [False] * 10) == pytest.approx(0.8)
    bins = cm.reliability([0.01, 0.5, 1.0], [False, True, True])
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 3 and bins[-1]["n"] == 1  # 1.0 in the last bin
    # two bins: 0.95 x4 (3 right) and 0.55 x4 (2 right): |0.95-0.75|/2 + |0.55-0.5|/2
    assert cm.ece([0.95] * 4 + [0.55] * 4, [1, 1, 1, 0, 1, 1, 0, 0]) == pytest.approx(0.125)


def test_coverage_and_risk():
    conf = [0.99, 0.98, 0.97, 0.6, 0.5]
    ok = [True, True, True, False, True]
    assert cm.accuracy_at_coverage(conf, ok, 0.6) == 1.0  # top 3
    assert cm.accuracy_at_coverage(conf, ok, 0.8) == 0.75  # top 4
    rc = {r["coverage"]: r for r in cm.risk_coverage(conf, ok)}
    assert rc[1.0]["risk"] == pytest.approx(0.2) and rc[0.6]["risk"] == 0.0 and rc[0.6]["threshold"] == 0.97
    thr, cov, risk = cm.threshold_for_risk(conf, ok, 0.0)
    assert (thr, cov, risk) == (0.97, 0.6, 0.0)
    assert cm.threshold_for_risk(conf, ok, 0.25) == (0.0, 1.0, 0.2)  # all answered: no abstention
    thr, cov, _ = cm.threshold_for_risk([0.9, 0.9, 0.8], [True, False, True], 0.0)
    assert thr == 0.9 and cov == pytest.approx(2 / 3)  # ties kept together, best effort when none qualifies
    m = cm.metrics(conf, ok, threshold=0.97)
    assert m["abstain_rate"] == pytest.approx(0.4) and m["risk_at_threshold"] == 0.0
    assert m["brier"] == pytest.approx(sum((c - k) ** 2 for c, k in zip(conf, ok)) / 5)
    assert {"ece", "accuracy_at_coverage_95", "accuracy_at_coverage_90", "risk_coverage"} <= set(m)


def test_temperature_scaling_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 12, generator=g) * 3
    true_t = 2.5  # labels drawn from softmax(logits / 2.5): the model's logits are overconfident by 2.5x
    gold = torch.multinomial(torch.softmax(logits / true_t, -1), 1, generator=g)[:, 0]
    t = cm.fit_temperature(torch.log_softmax(logits, -1), gold)
    assert t == pytest.approx(true_t, rel=0.1)
    assert cm.nll(logits, gold, t) < cm.nll(logits, gold, 1.0)
    assert math.isfinite(cm.fit_temperature(torch.tensor([[0.0, -math.inf]]), torch.tensor([0])))
