"""'Where' answers (QA): a plain-text "where is the scratch?" whose diagnosis abstains abstained only in
``ask --json``, the text located the withheld pattern; a later "where is it?" got the check list, not the
place of the pattern the first answer had diagnosed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from domainvlm.domains.wafer import head as wh
from domainvlm.domains.wafer.facts import image_facts, say
from domainvlm.domains.wafer.instruct import QUESTIONS


@pytest.fixture(scope="module")
def engine(tiny_wafer_head_dir):
    """The untrained tiny compact model with the wafer head (tests/conftest.py): its diagnosis is arbitrary,
    so answers are checked against the head's own first-turn answers, not against a pattern."""
    from domainvlm.inference.engine import Engine

    return Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)


@pytest.fixture(scope="module")
def img():
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    return render_map(synth_map(("Scratch",), 52, np.random.default_rng(5)))


@pytest.fixture
def head(engine, monkeypatch):
    h = wh.head_for(engine)
    monkeypatch.setattr(h, "confidence", None)  # plain text, as `ask` without --json
    monkeypatch.setattr(h, "annotators", [])
    return h


def _ask(engine, img, q):
    return engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img])])[0]


def _later(engine, img, earlier, q, first="Diagnose this wafer map."):
    msgs = [{"role": "user", "content": f"<image>\n{first}"}, {"role": "assistant", "content": earlier},
            {"role": "user", "content": q}]
    return engine.generate([(msgs, [img])])[0]


def _abstaining(head, monkeypatch):
    """Every confidence falls below the threshold (an untrained model's ~1/38): the low-confidence abstention."""
    monkeypatch.setattr(head, "calibration", dataclasses.replace(head.calibration, threshold=0.999))


@pytest.mark.parametrize("q,lang", [("Where is the scratch?", "en"), ("划痕在哪里？", "zh"),
                                    ("Where is the center?", "en")])
def test_text_where_abstains_with_the_diagnosis(engine, img, head, monkeypatch, q, lang):
    _abstaining(head, monkeypatch)
    diag = _ask(engine, img, QUESTIONS[lang][0])
    assert diag.assessment.abstain and diag.assessment.reason == "low_confidence"
    said = _ask(engine, img, q)
    assert said.assessment.abstain and said.assessment.reason == "low_confidence"
    assert str(said) == str(diag)  # the head's abstention wording, in the question's language
    assert ("不确定" if lang == "zh" else "Uncertain") in said
    monkeypatch.setattr(head, "confidence", True)  # `ask --json`: the same answer
    assert str(_ask(engine, img, q)) == str(said)


def test_text_where_agrees_with_the_structured_answer(engine, img, head, monkeypatch):
    labels = tuple(_ask(engine, img, QUESTIONS["en"][0]).assessment.labels)
    unseen = next(p for p in ("Scratch", "Center", "Donut", "Loc") if p not in labels)
    said = _ask(engine, img, f"Where is the {unseen}?")
    assert said == say(image_facts(img), "where", "en", unseen, labels)  # the unseen-pattern wording
    qs = (f"Where is the {unseen}?", "Where is the scratch?", "划痕在哪里？")
    texts = [str(_ask(engine, img, q)) for q in qs]
    monkeypatch.setattr(head, "confidence", True)  # `ask --json`: confidence, evidence and facts on
    head.enable_annotations()
    assert [str(_ask(engine, img, q)) for q in qs] == texts


@pytest.mark.parametrize("q,want", [("Where is it?", True), ("它在哪里？", True), ("Where is the defect?", True),
                                    ("Where is the scratch?", False), ("Where is the yield loss?", False),
                                    ("Is it severe?", False)])
def test_where_it_questions(q, want):
    from domainvlm.domains.wafer.questions import asks_where_it

    assert asks_where_it(q) is want


def test_later_where_is_it_locates_the_diagnosed_pattern(engine, img, head):
    assert _later(engine, img, "Diagnosis: Scratch", "Where is it?") == _ask(engine, img, "Where is the scratch?")
    assert _later(engine, img, "诊断：划痕(Scratch)", "它在哪里？", "这是什么缺陷？") == _ask(engine, img, "划痕在哪里？")
    both = _later(engine, img, "Diagnosis: Center + Scratch\n- Center: ...", "Where is it located?")
    assert both == f"{_ask(engine, img, 'Where is the center?')}\n{_ask(engine, img, 'Where is the scratch?')}"
    # the latest diagnosis line counts, not a later fact answer
    msgs = [{"role": "user", "content": "<image>\nDiagnose this wafer map."},
            {"role": "assistant", "content": "Diagnosis: Scratch"}, {"role": "user", "content": "What is the yield?"},
            {"role": "assistant", "content": "The yield is 90.0%."}, {"role": "user", "content": "Where is it?"}]
    assert engine.generate([(msgs, [img])])[0] == _ask(engine, img, "Where is the scratch?")


def test_later_where_is_it_with_nothing_diagnosed(engine, img, head):
    normal = _later(engine, img, "Diagnosis: Normal", "Where is it?")
    assert "no defect pattern to locate" in normal and "Normal" in normal
    assert "没有可定位的缺陷模式" in _later(engine, img, "诊断：正常(Normal)", "它在哪里？", "这是什么缺陷？")
    # no diagnosis line earlier: the head's own diagnosis of the map
    labels = tuple(_ask(engine, img, QUESTIONS["en"][0]).assessment.labels)
    own = _later(engine, img, "The yield is 90.0%.", "Where is it?", "What is the yield?")
    want = [str(_ask(engine, img, f"Where is the {p}?")) for p in labels]
    assert str(own) == ("\n".join(want) if labels else normal)


def test_later_where_is_it_abstains_and_where_from_asks_the_cause(engine, img, head, monkeypatch):
    from domainvlm.domains.wafer.instruct import follow_up_answer

    labels = tuple(_ask(engine, img, QUESTIONS["en"][0]).assessment.labels)
    assert _later(engine, img, "Diagnosis: Scratch", "Where does it come from?") == follow_up_answer(
        labels, "en", head.tax)  # the cause, not the place
    _abstaining(head, monkeypatch)
    said = _later(engine, img, "Diagnosis: Scratch", "Where is it?")
    assert said.assessment.abstain and str(said) == str(_ask(engine, img, QUESTIONS["en"][0]))
