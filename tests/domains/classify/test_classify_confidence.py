"""The classify head's structured answer: calibrated confidence over every valid line, per-class marginals,
low-confidence abstention, the uncalibrated text unchanged."""

import json

import pytest
import torch

from domainvlm.domains.classify.instruct import answer, parse_answer
from domainvlm.inference.assessment import LOW_CONFIDENCE
from domainvlm.inference.confidence import Calibration, save
from domainvlm.inference.engine import Engine

from test_classify_head import TAX, _img, model_dir  # noqa: F401 - the module's tiny model fixture


def _convs(n, q="What defect is this?"):
    return [([{"role": "user", "content": f"<image>\n{q}"}], [_img(s)]) for s in range(n)]


def test_assessment_is_the_argmax_with_its_probability(model_dir):  # noqa: F811
    eng = Engine(model_dir)
    head = eng.answer_head
    convs = _convs(3) + _convs(2, "这是什么缺陷？")
    texts = eng.generate(convs)
    got = head.assess(convs)
    langs = ["en"] * 3 + ["zh"] * 2
    for (m, ims), t, a, lang in zip(convs, texts, got, langs):
        s = head.scores([(m, ims)], [lang])[0]
        probs = torch.softmax(s, -1)
        assert a.labels == head.sets[int(s.argmax())] and a.lang == lang
        assert a.confidence == pytest.approx(float(probs.max()), abs=1e-5)
        assert sum(a.per_label.values()) == pytest.approx(1.0, abs=1e-4)  # single-label: marginals sum to one
        assert t == answer(a.labels, TAX, lang, True)  # uncalibrated model: the trained text, unchanged
        assert t.assessment.labels == a.labels and not a.abstain


def test_calibration_file_sets_temperature_and_threshold(model_dir, tmp_path):  # noqa: F811
    import shutil

    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    save(d, Calibration(temperature=100.0, threshold=0.9, info={"n": 4}))
    assert json.loads((d / "calibration.json").read_text())["temperature"] == 100.0
    eng = Engine(d)
    convs = _convs(2)
    texts = eng.generate(convs)
    for t in texts:
        a = t.assessment
        assert a.abstain and a.reason == LOW_CONFIDENCE and a.confidence < 0.3  # near-uniform over 4 classes
        assert parse_answer(t, TAX.names, TAX.none_label) == a.labels  # the answer line stays first
        assert t.split("\n")[1].startswith("Uncertain:")
        assert t.rstrip().endswith(f"{a.confidence:.1%}.")
