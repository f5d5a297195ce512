"""Canonical wafer answers parse back exactly; metrics are correct on hand-checked cases."""

from __future__ import annotations

import pytest

from domainvlm.domains.wafer.knowledge import answer, format_diagnosis, parse_diagnosis
from domainvlm.domains.wafer.patterns import canonical_set, mixedwm38_classes, set_name, wm811k_classes
from domainvlm.domains.wafer.metrics import wafer_metrics


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_class_round_trips(lang):
    for name in mixedwm38_classes():
        d = () if name == "Normal" else canonical_set(name.split("+"))
        for explain in (True, False):
            assert parse_diagnosis(answer(d, lang, explain)) == d


def test_parse_rejects_unknown_and_missing():
    assert parse_diagnosis("I think it is a donut") is None
    assert parse_diagnosis("Diagnosis: Center + Banana") is None
    assert parse_diagnosis("Diagnosis: Normal + Center") is None
    assert parse_diagnosis("") is None
    assert parse_diagnosis("诊断：中心 + 划痕") == ("Center", "Scratch")
    assert parse_diagnosis("diagnosis: edge-ring+loc.") == ("Edge-Ring", "Loc")


def test_taxonomies():
    assert len(mixedwm38_classes()) == 38 and len(set(mixedwm38_classes())) == 38
    assert len(wm811k_classes()) == 9
    assert set_name(()) == "Normal" and set_name(("Loc", "Center")) == "Center+Loc"
    assert format_diagnosis(("Scratch", "Center")) == "Diagnosis: Center + Scratch"
    with pytest.raises(ValueError):
        canonical_set(["Blob"])


def test_metrics_hand_checked():
    gold = [(), ("Center",), ("Center",), ("Center", "Loc"), ("Scratch",)]
    pred = [(), ("Center",), ("Donut",), ("Center",), None]
    m = wafer_metrics(gold, pred, "mixedwm38")
    assert m["n"] == 5
    assert m["exact_match"] == pytest.approx(2 / 5)
    assert m["unparsed"] == 1
    c = m["per_class"]["Center"]  # tp=1 (row 2), fp=1 (row 4 predicted Center for Center+Loc), fn=1 (row 3)
    assert (c["precision"], c["recall"], c["support"]) == (0.5, 0.5, 2)
    # per-pattern: Center tp=2 (rows 2,4), fn=1 (row 3)
    assert m["per_pattern"]["Center"]["recall"] == pytest.approx(2 / 3)
    assert m["per_pattern"]["Center"]["precision"] == pytest.approx(1.0)
    conf = m["confusion"]
    r, cols = conf["rows"].index("Scratch"), conf["cols"]
    assert conf["matrix"][r][cols.index("(unparsed)")] == 1
    # macro over the 4 gold classes present: Normal 1, Center 0.5, Center+Loc 0, Scratch 0
    assert m["macro_f1"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)


def test_wm811k_multi_pattern_prediction_is_other():
    m = wafer_metrics([("Loc",)], [("Loc", "Scratch")], "wm811k")
    assert m["exact_match"] == 0
    assert m["confusion"]["matrix"][m["confusion"]["rows"].index("Loc")][m["confusion"]["cols"].index("(other)")] == 1
