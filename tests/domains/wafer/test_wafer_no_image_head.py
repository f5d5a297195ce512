"""A text-only question that asks the wafer head for a diagnosis abstains (``no_image``) instead of letting the
small LM free-decode a made-up diagnosis; knowledge and off-topic questions still decode freely, and requests
with a map are unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domainvlm.domains.wafer import head as wh
from domainvlm.domains.wafer.knowledge import parse_diagnosis
from domainvlm.inference.assessment import SCHEMA

NO_IMAGE = "no_image"  # the wire value (inference.assessment.NO_IMAGE)


@pytest.fixture(scope="module")
def engine(tiny_wafer_head_dir):
    from domainvlm.inference.engine import Engine

    return Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)


def _user(q):
    return [{"role": "user", "content": q}]


NEEDS_MAP = ["Diagnose a wafer.", "What defect pattern does this wafer map show?", "这张晶圆图显示了什么缺陷模式？",
             "What is the yield?", "Where is the scratch?", "Why does my wafer have low yield?", "请诊断晶圆。"]
NO_MAP_NEEDED = ["What is an edge-ring pattern?", "什么是边缘环(Edge-Ring)？", "What causes scratches on wafers?",
                 "What does yield mean?", "What is the capital of France?", "hello", "法国的首都是哪里？"]


@pytest.mark.parametrize("q", NEEDS_MAP)
def test_text_only_diagnosis_requests_abstain(engine, q):
    from domainvlm.domains.wafer.assess import no_image

    a = no_image(wh.head_for(engine), _user(q), [])
    assert a is not None and a.abstain and a.reason == NO_IMAGE and a.labels == () and a.confidence is None
    assert a.lang == wh.question_lang(q)


@pytest.mark.parametrize("q", NO_MAP_NEEDED)
def test_knowledge_and_off_topic_questions_are_left_to_free_decoding(engine, q):
    from domainvlm.domains.wafer.assess import no_image

    assert no_image(wh.head_for(engine), _user(q), []) is None


def test_engine_answers_in_the_question_language_without_decoding(engine, monkeypatch):
    from domainvlm.inference.engine import Engine

    seen = []
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: seen.extend(convs) or ["FREE"] * len(convs))
    convs = [(_user("What defect pattern does this wafer map show?"), []), (_user("这张晶圆图有什么缺陷？"), []),
             (_user("What does yield mean?"), [])]
    en, zh, general = engine.generate(convs)
    assert "wafer map" in en and parse_diagnosis(en) is None and en.assessment.reason == NO_IMAGE
    assert "晶圆图" in zh and parse_diagnosis(zh) is None and zh.assessment.lang == "zh"
    # a compact model's LM learnt only answers about a map: the general question gets what the expert answers
    assert general.startswith("I answer questions about one wafer map") and not seen


def test_a_text_only_turn_is_checked_for_a_diagnosis_request_once(engine, monkeypatch):
    """The head's answer asked assess.no_image twice for each text-only turn (in help_answer, then again in
    _assess); the answers are the same with one check."""
    from domainvlm.domains.wafer import assess
    from domainvlm.inference.engine import Engine

    calls = []
    real = assess.no_image
    monkeypatch.setattr(assess, "no_image", lambda *a: calls.append(a[1][-1]["content"]) or real(*a))
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    qs = ["What defect pattern does this wafer map show?", "hello", "What is an edge-ring pattern?"]
    refused, hello, known = engine.generate([(_user(q), []) for q in qs])
    assert refused.assessment.reason == NO_IMAGE and hello.startswith("I answer questions about one wafer map")
    assert known.startswith("Edge-Ring: ")
    # the knowledge question is answered before any check; each of the other two is checked exactly once
    assert sorted(calls) == sorted(qs[:2]), calls


@pytest.mark.parametrize("q, words", [("hello", "I answer questions about one wafer map"),
                                      ("What can you do?", "Attach a map"), ("你好", "请附上晶圆图"),
                                      ("What is the capital of France?", "I answer questions about one wafer map")])
def test_other_text_only_turns_to_a_compact_model_get_what_it_answers(engine, monkeypatch, q, words):
    """'hello' was free-decoded by the 7 M LM into a made-up Chinese diagnosis line ('诊断：划痕(Scratch)')."""
    from domainvlm.inference.engine import Engine

    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    ans = engine.generate([(_user(q), [])])[0]
    assert words in ans and parse_diagnosis(ans) is None and getattr(ans, "assessment", None) is None


def test_a_real_base_keeps_its_own_chat_for_text_only_turns(engine, monkeypatch):
    """A head on a model whose config is not a compact build (a Qwen2-VL base) leaves 'hello' to the model."""
    from domainvlm.inference.engine import Engine

    head = wh.head_for(engine)
    dv = dict(head.model.config.domainvlm)
    monkeypatch.setattr(head.model.config, "domainvlm", {"answer_head": "wafer-diagnosis"})
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    assert engine.generate([(_user("hello"), [])])[0] == "FREE"
    assert engine.generate([(_user("What causes scratches?"), [])])[0].startswith("Scratch: ")  # the taxonomy's
    assert "vision_dim" in dv  # the fixture is a compact build, which the test above relies on


def test_plural_pattern_names_are_named_patterns():
    from domainvlm.domains.wafer.questions import named_pattern

    assert named_pattern("What causes scratches on wafers?") == "Scratch"
    assert named_pattern("where are the edge rings?") == "Edge-Ring"
    assert named_pattern("any donuts here?") == "Donut"
    assert named_pattern("a locust") is None  # a word that merely starts with a class name


def test_what_a_named_pattern_is_comes_from_the_taxonomy(engine, monkeypatch):
    """The small LM wrote a made-up diagnosis line ('诊断：(Edge-Ring)...') for this; now no decoding."""
    from domainvlm.inference.engine import Engine

    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    en, zh = engine.generate([(_user("What is an edge-ring pattern?"), []), (_user("什么是边缘环？"), [])])
    assert en.startswith("Edge-Ring: ") and "typical causes" in en and parse_diagnosis(en) is None
    assert zh.startswith("边缘环：") and "常见原因" in zh and parse_diagnosis(zh) is None
    assert getattr(en, "assessment", None) is None  # not a diagnosis: no structured answer


def test_requests_with_a_map_are_unchanged(engine):
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    img = render_map(synth_map((), 52, np.random.default_rng(0)))
    ans = engine.generate([(_user("<image>\nDiagnose this wafer map."), [img])])[0]
    assert parse_diagnosis(ans) is not None and ans.assessment.reason != NO_IMAGE


def test_structured_answers_say_no_image(engine, tiny_wafer_head_dir, tmp_path):
    """API response_format json_schema and predict JSONL carry abstain: true, reason: no_image."""
    from fastapi.testclient import TestClient

    from domainvlm.cli import main
    from domainvlm.inference.batcher import Batcher
    from domainvlm.serve.app import ServeConfig, create_app

    b = Batcher(engine)
    try:
        c = TestClient(create_app(b, ServeConfig()))
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Diagnose this wafer."}],
                                                 "response_format": {"type": "json_schema", "json_schema": {
                                                     "name": "assessment", "schema": SCHEMA}}})
        assert r.status_code == 200, r.text
        got = json.loads(r.json()["choices"][0]["message"]["content"])
        assert got["abstain"] is True and got["reason"] == NO_IMAGE and got["defects"] == []
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "请诊断这张晶圆图。"}]})
        assert "晶圆图" in r.json()["choices"][0]["message"]["content"]
    finally:
        b.close()
    inp = tmp_path / "q.jsonl"
    inp.write_text(json.dumps({"id": "t", "question": "What defect does this wafer show?"}) + "\n")
    out = tmp_path / "a.jsonl"
    assert main(["predict", str(inp), "-o", str(out), "--model", str(tiny_wafer_head_dir), "--no-progress"]) == 0
    row = json.loads(out.read_text())
    assert row["abstain"] is True and row["reason"] == NO_IMAGE and "wafer map" in row["answer"]
