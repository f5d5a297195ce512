"""Log-probs with the bundled wafer expert (QA): with ``logprobs`` on, the engine skipped the answer head and
let the compact model decode freely, so an English question could come back in Chinese (a follow-up "Why?"
did), a text-only or non-wafer question got a made-up diagnosis. The head now answers either way and its
text is scored by the model: the same answer, in the question's language, with log-probs of its own tokens."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

from domainvlm.inference.engine import Engine, Sampling

Q = "What defect pattern does this wafer map show?"
CJK = re.compile(r"[\u3400-\u9fff]")


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", threads=2)  # the bundled wafer expert


@pytest.fixture(scope="module")
def wafer():
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    return render_map(synth_map(("Center",), 32, np.random.default_rng(0)))


def first(q=Q):
    return [{"role": "user", "content": f"<image>\n{q}"}]


def check_logprobs(engine, a, top: int) -> None:
    """The entries are the answer's tokens (then the end-of-turn token), one per completion token."""
    tok = engine.processor.tokenizer
    lp = a.logprobs
    assert lp and len(lp) == a.completion_tokens
    body = lp[:-1] if a.finish_reason == "stop" else lp
    if a.finish_reason == "stop":
        assert lp[-1]["token"] == tok.eos_token
    assert b"".join(bytes(e["bytes"]) for e in body) == str(a).encode("utf-8")
    for e in lp:
        assert e["logprob"] <= 0 and len(e["top_logprobs"]) == top
        vals = [t["logprob"] for t in e["top_logprobs"]]
        assert vals == sorted(vals, reverse=True) and (not vals or vals[0] >= e["logprob"] - 1e-5)


@pytest.mark.parametrize("conv", ["first", "follow-up", "text-only", "not-a-wafer"])
def test_english_question_gets_the_same_english_answer_with_logprobs(engine, wafer, conv):
    msgs, imgs = {
        "first": (first(), [wafer]),
        "follow-up": (first() + [{"role": "assistant", "content": "Diagnosis: Center"},
                                 {"role": "user", "content": "Why?"}], [wafer]),
        "text-only": ([{"role": "user", "content": Q}], []),
        "not-a-wafer": (first(), [wafer.resize((64, 64))]),
    }[conv]
    off = engine.generate([(msgs, imgs)], Sampling(max_new_tokens=256))[0]
    on = engine.generate([(msgs, imgs)], Sampling(max_new_tokens=256, logprobs=2))[0]
    assert str(on) == str(off) and not CJK.search(str(on)), (str(off)[:80], str(on)[:80])
    check_logprobs(engine, on, 2)


def test_chinese_question_stays_chinese(engine, wafer):
    q = "这张晶圆图显示了什么缺陷模式？"
    off = engine.generate([(first(q), [wafer])], Sampling(max_new_tokens=256))[0]
    on = engine.generate([(first(q), [wafer])], Sampling(max_new_tokens=256, logprobs=0))[0]
    assert str(on) == str(off) and on.startswith("诊断：")
    check_logprobs(engine, on, 0)


def test_cut_answer_scores_the_tokens_returned(engine, wafer):
    a = engine.generate([(first(), [wafer])], Sampling(max_new_tokens=8, logprobs=1, cut_head_answers=True))[0]
    assert a.finish_reason == "length" and a.startswith("Diagnosis:")
    check_logprobs(engine, a, 1)


def test_scores_are_the_models_own_log_probs(engine, wafer):
    """Where the model's free decoding writes the same tokens as the head, both give the same log-probs."""
    conv = (first(), [wafer])
    on = engine.generate([conv], Sampling(max_new_tokens=256, logprobs=3))[0]
    with engine.lock:
        free = engine._decode([conv], Sampling(max_new_tokens=12, logprobs=3))[0]  # the head bypassed
    same = 0
    for a, b in zip(on.logprobs, free.logprobs):
        if a["token"] != b["token"]:
            break
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)
        assert [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]
        same += 1
    assert same >= 5, "the head's answer and free decoding share too few tokens to compare"


def test_api_logprobs_answer_in_english(engine, wafer):
    import openai

    from live_server import live_server

    buf = io.BytesIO()
    wafer.save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": Q}]}]
    with live_server(engine) as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
        off = c.chat.completions.create(model="tiny", messages=msgs, temperature=0)
        on = c.chat.completions.create(model="tiny", messages=msgs, temperature=0, logprobs=True, top_logprobs=2)
    text = on.choices[0].message.content
    assert text == off.choices[0].message.content and text.startswith("Diagnosis:") and not CJK.search(text)
    content = on.choices[0].logprobs.content
    assert len(content) == on.usage.completion_tokens == off.usage.completion_tokens
    assert b"".join(bytes(t.bytes) for t in content[:-1]) == text.encode("utf-8")
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
