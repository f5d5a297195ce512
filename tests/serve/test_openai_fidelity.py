"""OpenAI API fidelity, checked with the official `openai` client against the server on loopback (in-process):
usage counts, finish_reason from the generated ids, stop strings, seed, response_format (json_object and
json_schema, constrained), logprobs, strict types and 400 on unsupported fields."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from domainvlm.inference.engine import Engine, Sampling

from live_server import live_server
from test_serve_engine import png
from test_serve import data_url, img

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["Center", "Edge-Ring", "Scratch", "none"]},
                                           "count": {"type": "integer"}, "ok": {"type": "boolean"},
                                           "tags": {"type": "array", "items": {"type": "string",
                                                                              "enum": ["a", "b"]},
                                                    "maxItems": 2}},
          "required": ["label", "ok"], "additionalProperties": False}


def schema_valid(v) -> bool:
    """The schema above, checked by hand (no jsonschema dependency)."""
    if not isinstance(v, dict) or not {"label", "ok"} <= set(v) or not set(v) <= {"label", "count", "ok", "tags"}:
        return False
    return (v["label"] in SCHEMA["properties"]["label"]["enum"] and isinstance(v["ok"], bool)
            and (type(v.get("count", 0)) is int)
            and all(t in ("a", "b") for t in v.get("tags", [])) and len(v.get("tags", [])) <= 2)


@pytest.fixture(scope="module")
def api(tiny_model_dir):
    eng = Engine(tiny_model_dir, device="cpu")
    with live_server(eng) as base:
        yield {"base": base, "engine": eng,
               "client": openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=60)}


def user(q: str, image: bytes | None = None) -> list[dict]:
    if image is None:
        return [{"role": "user", "content": q}]
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": q}]}]


def test_usage_and_finish_reason_length(api):
    c, eng = api["client"], api["engine"]
    r = c.chat.completions.create(model="tiny", messages=user("Describe the map.", png(1)), max_tokens=3,
                                  temperature=0)
    want = eng.prompt_tokens([{"role": "user", "content": "<image>\nDescribe the map."}], [img(png(1))])
    u = r.usage
    # the image's tokens are counted
    assert u.prompt_tokens == want > eng.prompt_tokens([{"role": "user", "content": "Describe the map."}], [])
    assert u.completion_tokens <= 3 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    ans = eng.generate([([{"role": "user", "content": "<image>\nDescribe the map."}], [img(png(1))])],
                       Sampling(max_new_tokens=3, temperature=0))[0]
    assert r.choices[0].message.content == ans and u.completion_tokens == ans.completion_tokens
    assert r.choices[0].finish_reason == ("length" if ans.completion_tokens == 3 and
                                          ans.finish_reason == "length" else "stop")


def test_finish_reason_stop_on_end_of_turn(api):
    """A schema-constrained answer ends with the end-of-turn token once complete: 'stop', not 'length'."""
    r = api["client"].chat.completions.create(
        model="tiny", messages=user("label?"), max_tokens=80,
        response_format={"type": "json_schema", "json_schema": {"name": "d", "schema": SCHEMA}})
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 80


def test_json_schema_answers_are_schema_valid(api):
    c = api["client"]
    for k, q in enumerate(["What is shown?", "label it", "Describe the findings."]):
        r = c.chat.completions.create(model="tiny", messages=user(q, png(k + 1)), max_tokens=80, seed=k,
                                      temperature=0.8 if k else 0,
                                      response_format={"type": "json_schema",
                                                       "json_schema": {"name": "d", "schema": SCHEMA}})
        v = json.loads(r.choices[0].message.content)
        assert schema_valid(v), v


def test_json_object_answer_is_json_or_cut_at_length(api):
    r = api["client"].chat.completions.create(model="tiny", messages=user("Give JSON."), max_tokens=60,
                                              response_format={"type": "json_object"})
    text = r.choices[0].message.content
    assert text.startswith("{")
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # the only way out without a complete value: the token budget ran out (a valid prefix)
        from domainvlm.inference.json_constraint import OBJECT, state

        assert r.choices[0].finish_reason == "length" and state(OBJECT, text) == "partial"


def test_stop_strings_cut_the_answer(api):
    c, eng = api["client"], api["engine"]
    full = c.chat.completions.create(model="tiny", messages=user("hello"), max_tokens=12, temperature=0)
    text = full.choices[0].message.content
    assert len(text) >= 4, "the tiny model's answer is too short to cut"
    stop = text[2:4]
    r = c.chat.completions.create(model="tiny", messages=user("hello"), max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].message.content == text[:text.find(stop)].strip()
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens <= full.usage.completion_tokens
    parts = c.chat.completions.create(model="tiny", messages=user("hello"), max_tokens=12, temperature=0,
                                      stop=stop, stream=True, stream_options={"include_usage": True})
    chunks = list(parts)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert stop not in streamed and streamed == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens and not chunks[-1].choices
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


def test_seed_makes_sampling_reproducible(api):
    c = api["client"]
    kw = dict(model="tiny", messages=user("hello"), max_tokens=10, temperature=1.5)
    a = [c.chat.completions.create(seed=7, **kw).choices[0].message.content for _ in range(2)]
    others = {c.chat.completions.create(seed=s, **kw).choices[0].message.content for s in range(8, 12)}
    assert a[0] == a[1]
    assert others - {a[0]}, "five seeds gave one answer: the seed test would prove nothing"


def test_logprobs(api):
    r = api["client"].chat.completions.create(model="tiny", messages=user("hello"), max_tokens=5, temperature=0,
                                              logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob >= t.logprob - 1e-5  # greedy: the chosen token is the top one
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4


def test_logprob_bytes_rebuild_chinese_text(api, monkeypatch):
    """Tokens holding part of a character decode alone to U+FFFD; their ``bytes`` are still their own."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
    from test_token_bytes import ZH, forcing

    tok = api["engine"].processor.tokenizer
    ids = tok(ZH, add_special_tokens=False)["input_ids"]
    forcing(monkeypatch, api["engine"], ids)
    r = api["client"].chat.completions.create(model="tiny", messages=user("hello"), max_tokens=len(ids),
                                              temperature=0, logprobs=True)
    content = r.choices[0].logprobs.content
    assert r.choices[0].message.content == ZH
    assert b"".join(bytes(t.bytes) for t in content) == ZH.encode("utf-8")


@pytest.mark.parametrize("body,field", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logit_bias": {"5": 1}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"audio": {"voice": "x"}}, "audio"),
    ({"stream": 0}, "stream"),
    ({"temperature": False}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": 50}, "repetition_penalty"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"pattern": "a+"}}}},
     "pattern"),
    ({"response_format": {"type": "xml"}}, "response_format"),
])
def test_unsupported_or_mistyped_fields_are_400_naming_them(api, body, field):
    r = httpx.post(api["base"] + "/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "hi"}], **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]


def test_noop_defaults_and_harmless_fields_are_accepted(api):
    r = api["client"].chat.completions.create(model="tiny", messages=user("hi"), max_tokens=2, presence_penalty=0,
                                              frequency_penalty=0, user="u1", metadata={"a": "b"})
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("text,want", [
    ('{"label":"Center","ok":true}', "complete"), ('{"label": "Scratch", "ok": false, "tags": ["a"]}', "complete"),
    ('{"label":"Cen', "partial"), ('{"ok":tr', "partial"), ('{"count":12', "partial"), ('{"label":"Centre"', "invalid"),
    ('{"ok":true}', "invalid"),  # label is required
    ('{"label":"none","ok":true,"extra":1}', "invalid"), ('{"label":"none","ok":1}', "invalid"),
    ('{"label":"none","ok":true,"tags":["a","b","a"]}', "invalid"), ('{"count":01', "invalid"),
    ('{  "ok"', "invalid"),  # padding is limited to one space after ':' and ','
])
def test_schema_prefix_states(text, want):
    from domainvlm.inference.json_constraint import state

    assert state(SCHEMA, text) == want


def test_json_object_prefix_states():
    from domainvlm.inference.json_constraint import OBJECT, state

    assert state(OBJECT, '{"a": [1, 2.5e-3, "x\\u00e9", null, {"b": false}]}') == "complete"
    assert state(OBJECT, '{"a": "\\q"}') == "invalid" and state(OBJECT, "[1]") == "invalid"
    assert state(OBJECT, '{"a": "line') == "partial" and state(OBJECT, '{"a":1}x') == "invalid"


def test_constraint_alone_forces_schema_valid_json_whatever_the_logits(tiny_model_dir):
    """The guarantee does not rest on the model: with random logits every decode ends in a schema-valid value."""
    import torch

    from domainvlm.inference.json_constraint import JsonLogits, state
    from domainvlm.models.loader import load_processor

    tok = load_processor(tiny_model_dir).tokenizer
    eos = [tok.eos_token_id]
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        proc = JsonLogits(SCHEMA, tok, prompt_len=1, eos_ids=eos)
        ids = torch.tensor([[0]])
        for _ in range(200):
            scores = proc(ids, torch.randn(1, len(tok), generator=g))
            nxt = int(scores[0].argmax())
            if nxt in eos:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        text = tok.decode(ids[0, 1:].tolist(), skip_special_tokens=True)
        assert state(SCHEMA, text) == "complete" and schema_valid(json.loads(text)), (trial, text)
