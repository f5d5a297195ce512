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

TAX = from_dict({"name": "steel", "classes": [{"name": "crazing", "zh": "龟裂"}, "patches"]})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from classify_helpers import tiny_head_model

    return Engine(tiny_head_model(tmp_path_factory.mktemp("cls-noimg") / "model", TAX))


def _user(q):
    return [{"role": "user", "content": q}]


@pytest.mark.parametrize("q", ["What class is this?", "Classify this image.", "这张图像属于哪个类别？", "这是什么？",
                               "Is it crazing?"])
def test_text_only_class_questions_abstain(engine, q):
    ans = engine.generate([(_user(q), [])], Sampling(max_new_tokens=4))[0]
    a = ans.assessment
    assert a.abstain and a.reason == NO_IMAGE and a.labels == () and parse_answer(ans, TAX.names) is None
    assert ("图像" in ans) if a.lang == "zh" else ("need an image" in ans)


@pytest.mark.parametrize("q", ["What is crazing?", "hello", "什么是龟裂？"])
def test_knowledge_and_off_topic_questions_decode_freely(engine, q, monkeypatch):
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    assert engine.generate([(_user(q), [])])[0] == "FREE"


def test_images_still_get_a_class(engine):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    ans = engine.generate([(_user("<image>\nWhat class is this?"), [img])])[0]
    assert parse_answer(ans, TAX.names) is not None and ans.assessment.reason is None


def test_structured_answer_says_no_image(engine):
    from domainvlm.inference.engine import Sampling as S

    ans = engine.generate([(_user("Classify this image."), [])], S(json_schema=json.dumps(SCHEMA)))[0]
    got = json.loads(str(ans))
    assert got["abstain"] is True and got["reason"] == NO_IMAGE and got["defects"] == []
