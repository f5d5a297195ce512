"""A text-only question that needs the image of a classify-head model abstains (``no_image``) in the question's
language instead of a class made up by free decoding; knowledge and off-topic questions still decode freely."""

import json

import numpy as np
import pytest
from PIL import Image

from domainvlm.domains.classify.instruct import parse_answer
from domainvlm.inference.assessment import SCHEMA

NO_IMAGE = "no_image"  # the wire value (inference.assessment.NO_IMAGE)
from domainvlm.inference.engine import Engine, Sampling
from domainvlm.taxonomy import from_dict

TAX = from_dict({"name": "steel", "classes": [
    {"name": "crazing", "zh": "龟裂", "description": {"en": "fine cracks", "zh": "细裂纹"}}, "patches"]})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from classify_helpers import tiny_head_model

    return Engine(tiny_head_model(tmp_path_factory.mktemp("cls-noimg") / "model", TAX))


def _user(q):
    return [{"role": "user", "content": q}]


@pytest.mark.parametrize("q", ["What class is this?", "Classify this image.", "这张图像属于哪个类别？", "这是什么？",
                               "Is it crazing?"])
def test_text_only_class_questions_abstain(engine, q):
    ans = engine.generate([(_user(q), [])], Sampling(max_new_tokens=256))[0]  # room for the whole message
    a = ans.assessment
    assert a.abstain and a.reason == NO_IMAGE and a.labels == () and parse_answer(ans, TAX.names) is None
    assert ("图像" in ans) if a.lang == "zh" else ("need an image" in ans)


@pytest.mark.parametrize("q, want", [("What is crazing?", "crazing: fine cracks"), ("什么是龟裂？", "龟裂(crazing)：细裂纹"),
                                     ("hello", "I classify one image as one of (steel): crazing, patches"),
                                     ("你好", "请附上图像"), ("What is patches?", 'describe a class, e.g. "What is crazing?"')])
def test_text_only_turns_to_a_compact_model_are_answered_without_decoding(engine, q, want, monkeypatch):
    """A named class: its description from the taxonomy (named once); anything else: what the expert answers
    (its LM learnt only answers about an image, so decoding made a class line up)."""
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    ans = engine.generate([(_user(q), [])])[0]
    assert ans != "FREE" and want in ans and parse_answer(ans, TAX.names) is None


def test_a_real_base_keeps_its_own_chat(engine, monkeypatch):
    head = engine.answer_head
    monkeypatch.setattr(head.model.config, "domainvlm", {"answer_head": "classify", "taxonomy": TAX.name})
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    assert engine.generate([(_user("hello"), [])])[0] == "FREE"


def test_images_still_get_a_class(engine):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    ans = engine.generate([(_user("<image>\nWhat class is this?"), [img])])[0]
    assert parse_answer(ans, TAX.names) is not None and ans.assessment.reason is None


def test_structured_answer_says_no_image(engine):
    from domainvlm.inference.engine import Sampling as S

    ans = engine.generate([(_user("Classify this image."), [])], S(json_schema=json.dumps(SCHEMA)))[0]
    got = json.loads(str(ans))
    assert got["abstain"] is True and got["reason"] == NO_IMAGE and got["defects"] == []


@pytest.mark.parametrize("q, note", [("这是什么？", "我只能判断图像属于哪一类"),
                                     ("Is the defect severe?", "I can only say which class an image shows")])
def test_a_later_turn_about_the_image_gets_its_class_again(engine, monkeypatch, q, note):
    """A compact model's LM learnt only the first answer: later turns decoded freely were word salad. They get
    the image's class again, in the new question's language, said to be all the model answers."""
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    first = engine.generate([(_user("<image>\nWhat class is this?"), [img])])[0]
    msgs = [*_user("<image>\nWhat class is this?"), {"role": "assistant", "content": str(first)}, *_user(q)]
    ans = engine.generate([(msgs, [img])])[0]
    alone = engine.generate([(_user(f"<image>\n{q}"), [img])])[0]  # the question asked first (its language)
    assert ans != "FREE" and ans.startswith(note) and ans.assessment.labels == alone.assessment.labels
    assert str(ans).split("\n", 1)[1] == str(alone)
