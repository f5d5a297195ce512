"""The classify head's out-of-domain check (domains/classify/input_check.py): fitted by `domainvlm calibrate
--input-check` on a generated labelled folder (tiny model, no real data), stored as safetensors; unlike images
abstain with reason out_of_domain in the question's language, in-domain answers are unchanged. The stored
check of the NEU steel expert is measured on real non-steel images where ../shared/data is present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainvlm.cli import main
from domainvlm.domains.classify import input_check as ic
from domainvlm.errors import UserError
from domainvlm.inference.assessment import OUT_OF_DOMAIN
from domainvlm.inference.engine import Engine

from test_classify_head import TAX, model_dir  # noqa: F401 - the module's tiny model fixture

ROOT = Path(__file__).resolve().parents[3]
Q_EN, Q_ZH = "<image>\nWhat defect is this?", "<image>\n这是什么缺陷？"


def texture(kind: int, rng, size: int = 48) -> Image.Image:
    """Grey steel-like textures, one kind per class: fine noise, dots, blobs, horizontal streaks."""
    base = rng.normal(120, 12, (size, size))
    if kind == 0:
        base += rng.normal(0, 25, (size, size))
    elif kind == 1:
        ys, xs = rng.integers(0, size, (2, 30))
        base[ys, xs] -= 60
    elif kind == 2:
        f = np.kron(rng.normal(0, 30, (6, 6)), np.ones((size // 6, size // 6)))
        base += f[:size, :size]
    else:
        base += np.repeat(rng.normal(0, 25, (size, 1)), size, 1)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).convert("RGB")


def _folder(root: Path, per_class: dict) -> Path:
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for k, c in enumerate(TAX.names):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                texture(k, rng).save(d / f"{i}.png")
    return root


def _strangers() -> list[Image.Image]:
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    rng = np.random.default_rng(1)
    x = np.linspace(0, 255, 64)
    ramp = Image.fromarray(np.add.outer(x / 2, x / 2).astype(np.uint8)).convert("RGB")
    return [render_map(synth_map(("Center",), 52, rng)), Image.new("RGB", (64, 64), (255, 255, 255)),
            Image.new("RGB", (64, 64), (0, 0, 0)), ramp, Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))]


@pytest.fixture(scope="module")
def checked(model_dir, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("cls-ood")
    d = tmp / "model"
    shutil.copytree(model_dir, d)
    data = _folder(tmp / "data", {"train": 12, "val": 6})
    assert main(["calibrate", "--model", str(d), "--data", str(data), "--split", "val", "--input-check", str(data),
                 "--input-check-only", "--quiet"]) == 0
    return d, data


def _ask(eng, images, q=Q_EN):
    return eng.generate([([{"role": "user", "content": q}], [im]) for im in images])


def test_calibrate_writes_a_safetensors_check_only(checked, model_dir):  # noqa: F811
    d, _ = checked
    assert (d / ic.FILE).is_file() and not (d / "calibration.json").exists()  # --input-check-only
    chk = ic.load(d)
    assert chk.info["n_train"] == 48 and chk.info["n_val"] == 24 and chk.info["classes"] == 4
    assert chk.info["val_rejected"] <= 0.02 and chk.size == 32  # the tiny model's input size
    assert ic.load(model_dir) is None  # a folder without the file is not checked


def test_unlike_images_abstain_in_the_question_language(checked):
    eng = Engine(checked[0])
    for q, word in ((Q_EN, "does not look like the images this model was trained on"), (Q_ZH, "看起来不像")):
        for a in _ask(eng, _strangers(), q):
            j = a.assessment.to_json()
            assert j["abstain"] is True and j["reason"] == OUT_OF_DOMAIN and j["defects"] == []
            assert j["confidence"] is None and word in a and TAX.name in a


def test_in_domain_answers_are_unchanged(checked, model_dir):  # noqa: F811
    d, data = checked
    val = [Image.open(p).convert("RGB") for p in sorted((data / "val").glob("*/*.png"))]
    with_check, plain = _ask(Engine(d), val), _ask(Engine(model_dir), val)
    assert [str(a) for a in with_check] == [str(a) for a in plain]  # 0 of 24 turned away (<= 2%)
    assert all(a.assessment.reason != OUT_OF_DOMAIN for a in with_check)


def test_api_structured_answer_abstains_out_of_domain(checked):
    import base64
    import io

    from fastapi.testclient import TestClient

    from domainvlm.inference.assessment import SCHEMA
    from domainvlm.inference.batcher import Batcher
    from domainvlm.serve.app import ServeConfig, create_app

    batcher = Batcher(Engine(checked[0]), max_batch=2, max_wait_ms=5)
    buf = io.BytesIO()
    _strangers()[0].save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "这是什么缺陷？"}]}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}}
    try:
        with TestClient(create_app(batcher, ServeConfig(max_tokens_cap=256))) as c:
            v = json.loads(c.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"])
            legacy = c.post("/", json={"text": "What defect is this?", "image": url.split(",", 1)[1],
                                       "assessment": True}).json()
    finally:
        batcher.close()
    assert v["abstain"] is True and v["reason"] == OUT_OF_DOMAIN and "看起来不像" in v["answer"]
    assert legacy["assessment"]["abstain"] is True and legacy["response"].startswith("This image does not look")


def test_a_damaged_check_file_is_one_clear_error(checked, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(checked[0], d)
    (d / ic.FILE).write_bytes(b"not safetensors")
    with pytest.raises(UserError, match=r"input_check\.safetensors: not a valid input check"):
        ic.load(d)


def test_calibrate_input_check_argument_errors(checked, capsys):
    d, data = checked
    assert main(["calibrate", "--model", str(d), "--data", str(data), "--input-check-only"]) != 0
    assert "--input-check-only needs --input-check" in capsys.readouterr().err


def test_neu_expert_turns_away_non_steel_images(shared_data):
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    chk = ic.load(ROOT / "models" / "neu-steel-expert")
    assert chk is not None and chk.size == 200
    rng = np.random.default_rng(0)
    xr = [Image.open(p).convert("RGB") for p in sorted((shared_data / "iu-xray-samples" / "images").glob("*.png"))]
    wafers = [render_map(synth_map(k, 52, rng)) for k in [(), ("Scratch",), ("Donut",), ("Edge-Ring",)] * 5]
    gen = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (32, 96, 200, 300)] * 3
    gen += [Image.new("RGB", (200, 200), (v, v, v)) for v in (0, 90, 180, 255)] + _strangers()
    strangers = xr + wafers + gen
    assert len(strangers) >= 50 and all(chk.outside(strangers))
    val = sorted((shared_data / "neu-steel" / "val").glob("*/*.jpg"))
    away = sum(chk.outside([Image.open(p) for p in val]))
    assert len(val) == 360 and away <= 0.02 * len(val)
