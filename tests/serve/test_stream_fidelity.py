"""Streaming honours what non-streamed generation does: stop strings and JSON constraints, both in
``Engine.stream`` (chat, web UI) and in the API's ``stream=true`` (checked with the official openai client)."""

from __future__ import annotations

import json

import pytest
import torch

from domainvlm.inference.engine import Engine, Sampling
from domainvlm.inference.json_constraint import OBJECT, state

from test_openai_fidelity import SCHEMA, api, schema_valid, user  # noqa: F401 - api is a fixture
from test_serve_engine import conv

SCHEMA_TEXT = json.dumps(SCHEMA)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir)


def drain(it):
    """(pieces, the iterator's return value)."""
    pieces = []
    while True:
        try:
            pieces.append(next(it))
        except StopIteration as stop:
            return pieces, stop.value


def test_engine_stream_cuts_at_stop_strings_like_generate(engine):
    msgs, imgs = conv("What defect is this?")
    full = engine.generate([(msgs, imgs)], Sampling(max_new_tokens=12, temperature=0))[0]
    assert len(full) >= 4, "the tiny model's answer is too short to cut"
    s = Sampling(max_new_tokens=12, temperature=0, stop=(full[2:4],))
    want = engine.generate([(msgs, imgs)], s)[0]
    pieces, ans = drain(engine.stream(msgs, imgs, s))
    streamed = "".join(pieces)
    assert full[2:4] not in streamed and streamed == want == ans
    assert want == full[:full.find(full[2:4])].strip() and ans.finish_reason == "stop"
    assert ans.completion_tokens == want.completion_tokens < full.completion_tokens


@pytest.mark.parametrize("schema,temperature", [(SCHEMA_TEXT, 0), (SCHEMA_TEXT, 0.9), (json.dumps(OBJECT), 0)])
def test_engine_stream_json_constrained_like_generate(engine, schema, temperature):
    msgs, imgs = conv("Give JSON.", seed=3)
    s = Sampling(max_new_tokens=80, temperature=temperature, seed=7, json_schema=schema)
    want = engine.generate([(msgs, imgs)], s)[0]
    pieces, ans = drain(engine.stream(msgs, imgs, s))
    assert len(pieces) > 1, "a free-decoded JSON answer should stream token by token"
    assert "".join(pieces) == want == ans  # same seed, same constraint: the same answer
    if ans.finish_reason == "stop":
        v = json.loads(ans)
        assert schema_valid(v) if schema == SCHEMA_TEXT else isinstance(v, dict)
    else:
        assert state(json.loads(schema), str(ans)) == "partial"


def test_engine_stream_with_a_head_ignores_nothing(engine, monkeypatch):
    """An answer head answers whole; a stop string inside its answer still cuts the streamed piece."""
    from types import SimpleNamespace

    head = SimpleNamespace(answer=lambda convs, s: ["Diagnosis: Center (1)"] * len(convs))
    monkeypatch.setattr(engine, "answer_head", head)
    try:
        pieces, ans = drain(engine.stream(*conv("What defect?"), Sampling(max_new_tokens=6, stop=(" (",))))
        assert pieces == ["Diagnosis: Center"] and ans == "Diagnosis: Center"
    finally:
        engine.answer_head = None
        engine._head_factory = None


def _stream(api, **kw):
    chunks = list(api["client"].chat.completions.create(model="tiny", stream=True,
                                                        stream_options={"include_usage": True}, **kw))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
    return text, finish, chunks[-1].usage


@pytest.mark.parametrize("k", range(3))
def test_api_stream_json_schema_equals_non_streamed_and_is_valid(api, k):
    kw = dict(messages=user(["What is shown?", "label it", "Describe."][k]), max_tokens=80, seed=k,
              temperature=0.8 if k else 0,
              response_format={"type": "json_schema", "json_schema": {"name": "d", "schema": SCHEMA}})
    r = api["client"].chat.completions.create(model="tiny", **kw)
    text, finish, usage = _stream(api, **kw)
    assert text == r.choices[0].message.content and finish == r.choices[0].finish_reason
    assert usage.completion_tokens == r.usage.completion_tokens
    if finish == "stop":
        assert schema_valid(json.loads(text))


def test_api_stream_json_schema_with_a_stop_string(api):
    """Both at once: the constrained answer is cut at the stop string, streamed or not."""
    kw = dict(messages=user("Give JSON."), max_tokens=60, temperature=0,
              response_format={"type": "json_schema", "json_schema": {"name": "d", "schema": SCHEMA}})
    whole, _, _ = _stream(api, **kw)
    assert whole.startswith('{"label"') and len(whole) > 12
    stop = whole[10:12]
    r = api["client"].chat.completions.create(model="tiny", stop=[stop], **kw)
    text, finish, usage = _stream(api, stop=[stop], **kw)
    assert stop not in text and text == r.choices[0].message.content == whole[:whole.find(stop)].strip()
    assert finish == r.choices[0].finish_reason == "stop" and usage.completion_tokens == r.usage.completion_tokens


def _scripted(eng, monkeypatch, text: str):
    """Make ``eng``'s model "generate" exactly ``text`` (then end of turn), through the streamer as generate()
    drives it: the whitespace around the answer is then known, not whatever a tiny random model happens to say."""
    tok = eng.processor.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == text

    def generate(input_ids, streamer=None, **kw):
        out = torch.cat([input_ids, torch.tensor([ids] * len(input_ids))], dim=1)
        if streamer is not None:
            streamer.put(input_ids)
            for t in ids:
                streamer.put(torch.tensor([t] * len(input_ids)))
            streamer.end()
        return out

    monkeypatch.setattr(eng.model, "generate", generate)


WHITESPACE_ANSWER = " \n Diagnosis: Center  pattern. \n\n"


@pytest.mark.parametrize("stop,want", [(None, "Diagnosis: Center  pattern."), (("pattern",), "Diagnosis: Center")])
def test_engine_stream_joins_to_exactly_the_generated_text(engine, monkeypatch, stop, want):
    """Streamed and non-streamed text are one text: stripped of the model's leading and trailing whitespace
    (before, generate() stripped and the stream sent ' \\n Diagnosis: ...' as generated)."""
    _scripted(engine, monkeypatch, WHITESPACE_ANSWER)
    msgs, imgs = conv("What defect?")
    s = Sampling(max_new_tokens=40, stop=stop)
    got = engine.generate([(msgs, imgs)], s)[0]
    pieces, ans = drain(engine.stream(msgs, imgs, s))
    assert got == ans == want and "".join(pieces) == want
    assert len(pieces) > 1 and all(pieces)  # still token by token, and no empty pieces


def test_api_stream_joins_to_exactly_the_non_streamed_content(api, monkeypatch):
    _scripted(api["engine"], monkeypatch, WHITESPACE_ANSWER)
    r = api["client"].chat.completions.create(model="tiny", messages=user("What defect?"), max_tokens=40)
    text, finish, usage = _stream(api, messages=user("What defect?"), max_tokens=40)
    assert text == r.choices[0].message.content == "Diagnosis: Center  pattern."
    assert finish == r.choices[0].finish_reason == "stop" and usage.completion_tokens == r.usage.completion_tokens


def test_real_model_stream_equals_generate_exactly(engine):
    """The tiny model itself: seed 3 begins its answer with a space (which the stream used to send)."""
    for seed in range(5):
        msgs, imgs = conv("What defect is this?", seed)
        s = Sampling(max_new_tokens=12, temperature=1.0, seed=seed)
        want = engine.generate([(msgs, imgs)], s)[0]
        pieces, ans = drain(engine.stream(msgs, imgs, s))
        assert "".join(pieces) == want == ans, seed


def test_strip_filter_sends_what_strip_keeps():
    from domainvlm.inference.generation import StripFilter

    for pieces in [[" ", "\n", "Diag", "nosis ", " ", "x", " \n"], ["  "], ["a"], ["\t a b", " ", ""], []]:
        sent = []
        f = StripFilter(sent.append)
        for p in pieces:
            f(p)
        assert "".join(sent) == "".join(pieces).strip() and all(sent)
