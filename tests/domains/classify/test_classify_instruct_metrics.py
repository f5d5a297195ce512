"""Classify instruction builder (en/zh canonical lines, descriptions, parse back) and its metrics."""

import random

import pytest

from domainvlm.domains.classify.instruct import (QUESTIONS, answer, class_line, classify_record, parse_answer,
                                                 question_lang)
from domainvlm.domains.classify.metrics import classify_metrics
from domainvlm.taxonomy import from_dict

TAX = from_dict({"name": "steel", "classes": [
    {"name": "crazing", "zh": "龟裂", "description": {"en": "fine cracks", "zh": "细裂纹"}},
    {"name": "scratches", "zh": "划痕", "description": "long lines"}, "patches"]})
MULTI = from_dict({"name": "m", "multi_label": True, "none_label": "clean", "classes": [
    {"name": "a", "zh": "甲", "description": {"en": "A thing"}}, "b"]})


def test_answers_en_zh_and_round_trip():
    assert answer(("crazing",), TAX, "en") == "Class: crazing\nfine cracks"
    assert answer(("crazing",), TAX, "zh") == "类别：龟裂(crazing)\n细裂纹"
    assert answer(("scratches",), TAX, "zh") == "类别：划痕(scratches)\nlong lines"  # en description as fallback
    assert answer(("patches",), TAX, "en") == "Class: patches"
    for name in TAX.names:
        for lang in ("en", "zh"):
            assert parse_answer(answer((name,), TAX, lang), TAX.names) == (name,)
    assert parse_answer("I think crazing", TAX.names) is None
    assert parse_answer("Class: rust", TAX.names) is None


def test_multi_label_lines():
    assert class_line(("b", "a"), MULTI, "en") == "Classes: a + b"
    assert class_line((), MULTI, "zh") == "类别：clean"
    assert answer(("a", "b"), MULTI, "en") == "Classes: a + b\na: A thing"
    assert parse_answer("类别：甲(a) + b", MULTI.names, "clean") == ("a", "b")
    assert parse_answer("Classes: clean", MULTI.names, "clean") == ()


def test_record_and_question_language():
    r = classify_record("/x.png", ["crazing"], TAX, "zh", "id0", random.Random(0), split="val")
    assert r.messages[0]["content"].split("\n", 1)[1] in QUESTIONS["zh"]
    assert r.labels == {"task": "classify", "labels": ["crazing"], "taxonomy": "steel"}
    assert r.meta["split"] == "val" and r.meta["lang"] == "zh"
    assert question_lang("这是什么？") == "zh" and question_lang("What is it?") == "en"


def test_metrics_single_label():
    gold = [("a",), ("a",), ("b",), ("b",), ("c",)]
    pred = [("a",), ("b",), ("b",), None, ("c",)]
    m = classify_metrics(gold, pred, ["a", "b", "c"], "t")
    assert m["exact_match"] == pytest.approx(3 / 5) and m["unparsed"] == 1
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5) and m["per_class"]["b"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    c = m["confusion"]
    assert c["rows"] == ["a", "b", "c"] and c["cols"][-2:] == ["(other)", "(unparsed)"]
    assert c["matrix"] == [[1, 1, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]]


def test_metrics_multi_label_sets():
    gold = [("a", "b"), (), ("a",)]
    pred = [("b", "a"), ("a",), ("a",)]
    m = classify_metrics(gold, pred, ["a", "b"], "m", "clean")
    assert m["exact_match"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert "a + b" in m["confusion"]["rows"] and "clean" in m["confusion"]["rows"]


def test_a_class_named_none_is_scored_as_that_class():
    tax = from_dict({"name": "t", "classes": ["none", "scratch", "无"]})
    for lang, name in (("en", "none"), ("zh", "none"), ("zh", "无")):
        assert parse_answer(answer((name,), tax, lang), tax.names) == (name,)
    m = classify_metrics([("none",), ("scratch",)], [parse_answer("Class: none", tax.names), ("scratch",)], tax.names)
    assert m["exact_match"] == 1.0 and m["per_class"]["none"]["f1"] == 1.0
