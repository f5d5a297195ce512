"""The bundled wafer expert: loads through the common loader, answers the example maps in en and zh."""

from __future__ import annotations

from pathlib import Path

import pytest

from domainvlm.domains.wafer.knowledge import parse_diagnosis
from domainvlm.models.loader import BUNDLED

EXAMPLES = Path(BUNDLED).parent / "examples"
EXPECTED = {"wafer_center.png": ("Center",), "wafer_scratch.png": ("Scratch",), "wafer_edge_ring.png": ("Edge-Ring",)}


@pytest.fixture(scope="module")
def engine():
    from domainvlm.inference.engine import Engine

    return Engine(device="cpu", threads=2)  # no --model: the bundled default


def test_bundled_model_is_a_small_standard_hf_folder():
    from domainvlm.models.loader import inspect_dir

    assert inspect_dir(BUNDLED)["model_type"] == "qwen2_vl"
    assert (BUNDLED / "model.safetensors").stat().st_size < 60e6
    assert (BUNDLED / "README.md").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_maps_answered_in_both_languages(engine, name):
    from domainvlm.data.images import load_image

    img = load_image(str(EXAMPLES / name))
    qs = ["What defect pattern does this wafer map show?", "这张晶圆图显示了什么缺陷模式？"]
    en, zh = engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img]) for q in qs])
    assert en.startswith("Diagnosis:") and zh.startswith("诊断：")
    assert parse_diagnosis(en) == parse_diagnosis(zh) == EXPECTED[name]
    assert "typical causes" in en and "常见原因" in zh


def test_off_topic_refused_and_unclear_question_diagnosed_in_its_language(engine):
    from domainvlm.data.images import load_image

    img = load_image(str(EXAMPLES / "wafer_scratch.png"))
    ask = lambda q: engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img])])[0]  # noqa: E731
    assert ask("What is the capital of France?").startswith("I am a wafer-map expert")
    assert ask("法国的首都是哪里？").startswith("我是晶圆图专家")
    assert parse_diagnosis(ask("What should I check?")) == ("Scratch",)
    assert ask("这是什么？").startswith("诊断：")


def test_ask_command_uses_the_bundled_model(capsys):
    from domainvlm.cli import main

    assert main(["ask", "--image", str(EXAMPLES / "wafer_center.png"), "--threads", "2",
                 "What defect pattern does this wafer map show?"]) == 0
    assert parse_diagnosis(capsys.readouterr().out) == ("Center",)


def test_eval_on_mixedwm38_val_sample(shared_data, tmp_path):
    import json

    from domainvlm.cli import main

    out = tmp_path / "m.json"
    rc = main(["eval", "--data", str(shared_data / "mixedwm38" / "mixedwm38_trainval.npz"), "--split", "val",
               "--limit", "200", "--out", str(out), "--quiet", "--threads", "2"])
    m = json.loads(out.read_text())
    assert rc == 0 and m["n"] == 200 and m["unparsed"] == 0
    assert m["exact_match"] >= 0.95


def test_more_bias_moves_the_trained_model_to_more_patterns(engine):
    from domainvlm.data.images import load_image
    from domainvlm.domains.wafer.head import head_for

    head = head_for(engine)
    names = ("wafer_center.png", "wafer_edge_ring.png", "wafer_scratch.png")
    pv, g = head.pixel_values([load_image(str(EXAMPLES / n)) for n in names])
    prompts = [head.prompt_ids([{"role": "user", "content": "<image>\nDiagnose this wafer map."}])] * 3
    shipped = head.more_bias
    try:
        head.more_bias = 1e4
        many = head.diagnose(pv, g, prompts, ["en"] * 3)
        head.more_bias = shipped
        assert head.diagnose(pv, g, prompts, ["en"] * 3) == [EXPECTED[n] for n in names]
    finally:
        head.more_bias = shipped
    # the first pattern is kept and more follow; no pattern of MixedWM38 comes after Scratch in a mixture
    assert many[0][0] == "Center" and many[1][0] == "Edge-Ring" and len(many[0]) >= 2 and len(many[1]) >= 2, many
    assert many[2] == ("Scratch",)
