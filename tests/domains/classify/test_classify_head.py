"""The constrained classify head on a tiny untrained model: answers are always valid lines of the question's
language, and its scores are the model's own log-probabilities of each candidate line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from domainvlm.domains.classify.instruct import answer, parse_answer
from domainvlm.inference.engine import Engine, Sampling
from domainvlm.taxonomy import from_dict

TAX = from_dict({"name": "steel", "classes": [
    {"name": "crazing", "zh": "龟裂", "description": {"en": "fine cracks", "zh": "细裂纹"}},
    {"name": "pitted_surface", "zh": "麻点", "description": {"en": "small pits"}}, "patches", "rolled-in_scale"]})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from classify_helpers import tiny_head_model

    return tiny_head_model(tmp_path_factory.mktemp("cls-head") / "model", TAX)


def _img(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_answers_are_valid_lines_in_the_question_language(model_dir):
    eng = Engine(model_dir)
    convs = [([{"role": "user", "content": "<image>\nWhat class is this?"}], [_img(0)]),
             ([{"role": "user", "content": "<image>\n这是哪一类？"}], [_img(1)])]
    en, zh = eng.generate(convs, Sampling(max_new_tokens=8))
    got = parse_answer(en, TAX.names)
    assert got is not None and en == answer(got, TAX, "en")
    got = parse_answer(zh, TAX.names)
    assert got is not None and zh == answer(got, TAX, "zh") and zh.startswith("类别：")


def test_follow_up_turns_decode_freely(model_dir):
    eng = Engine(model_dir)
    msgs = [{"role": "user", "content": "<image>\nWhat class is this?"},
            {"role": "assistant", "content": "Class: patches"}, {"role": "user", "content": "Why?"}]
    out = eng.generate([(msgs, [_img(2)])], Sampling(max_new_tokens=4))
    assert isinstance(out[0], str)


def _reference_logprob(model, proc, messages, image, cand):
    """log p(cand | prompt) from one plain forward of the processor's inputs (no fast path)."""
    from domainvlm.models.chat_format import encode_prompt

    enc = encode_prompt(proc, messages, [image])
    ids = torch.cat([enc["input_ids"], torch.tensor([cand])], 1)
    enc.update(input_ids=ids, attention_mask=torch.ones_like(ids))
    if "mm_token_type_ids" in enc:
        enc["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros(1, len(cand), dtype=torch.long)], 1)
    lp = torch.log_softmax(model(**enc).logits[0].float(), -1)
    n = enc["input_ids"].shape[1] - len(cand)
    return sum(lp[n - 1 + i, t].item() for i, t in enumerate(cand))


@pytest.mark.parametrize("path", ["cached", "rows", "generic"])
def test_scores_are_the_models_log_probabilities(model_dir, path, monkeypatch):
    """cached: one prompt pass + its KV cache per candidate; rows: one row per candidate (taxonomies with more
    answer sets than a batch holds); generic: the image repeated per candidate, as for other families."""
    from domainvlm.domains.classify import head as head_mod
    from domainvlm.models.loader import load_model

    model, proc = load_model(model_dir)
    if path == "rows":
        monkeypatch.setattr(head_mod, "MAX_ROWS", 3)
    head = head_mod.ClassifyHead(model, proc)
    head.qwen = path != "generic"
    msgs = [{"role": "user", "content": "<image>\n这张图像属于哪个类别？"}]
    convs = [(msgs, [_img(3)]), ([{"role": "user", "content": "<image>\nClassify."}], [_img(4)])]
    scores = head.scores(convs, ["zh", "en"])
    for (m, ims), lang, s in zip(convs, ["zh", "en"], scores):
        ref = [_reference_logprob(model, proc, m, ims[0], c) for c in head.cands[lang]]
        assert s.tolist() == pytest.approx(ref, abs=2e-3)
    assert len(head.cands["en"]) == 4 and all(c[-1] for c in head.cands["en"])


def test_predict_and_the_http_api_answer_through_the_head(model_dir, tmp_path):
    """Batch inference and the OpenAI-compatible API use the same head: every answer is a valid class line."""
    import base64
    import io

    from fastapi.testclient import TestClient

    from domainvlm.cli import main
    from domainvlm.inference.batcher import Batcher
    from domainvlm.serve.app import ServeConfig, create_app

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _img(10 + i).save(folder / f"{i}.png")
    out = tmp_path / "answers.jsonl"
    assert main(["predict", str(folder), "-o", str(out), "-q", "Which class?", "--model", str(model_dir),
                 "--no-progress"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(parse_answer(r["answer"], TAX.names) for r in rows)
    buf = io.BytesIO()
    _img(20).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    b = Batcher(Engine(model_dir))
    try:
        c = TestClient(create_app(b, ServeConfig()))
        r = c.post("/v1/chat/completions", json={"model": "domainvlm", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "这是什么？"}]}]})
        text = r.json()["choices"][0]["message"]["content"]
        assert r.status_code == 200 and text.startswith("类别：") and parse_answer(text, TAX.names)
    finally:
        b.close()
