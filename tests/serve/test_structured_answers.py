"""The API's response_format json_schema with a head model: a diagnosis of one image comes back as the head's
Assessment JSON (official `openai` client, server in-process on loopback); a non-wafer image abstains; a
schema asking for some of its fields gets the head's values of those; a schema the Assessment does not fit is
still decoded under the constraint."""

from __future__ import annotations

import io
import json

import numpy as np
import openai
import pytest
from PIL import Image

from domainvlm.inference.assessment import OUT_OF_DOMAIN, SCHEMA
from domainvlm.inference.engine import Engine

from live_server import live_server
from test_serve import data_url

PATTERNS = {"Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Scratch", "Random"}


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _wafer_png(seed=0) -> bytes:
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    return _png(render_map(synth_map(("Center",), 52, np.random.default_rng(seed))))


@pytest.fixture(scope="module")
def api(tiny_wafer_head_dir):
    with live_server(Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)) as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=60)


def _ask(client, image: bytes, q="What defect pattern does this wafer map show?", schema=SCHEMA):
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": q}]}]
    return client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=200, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "assessment", "schema": schema}})


def test_diagnosis_returns_the_assessment_json(api):
    r = _ask(api, _wafer_png())
    v = json.loads(r.choices[0].message.content)
    assert set(SCHEMA["required"]) <= set(v) and set(v["defects"]) <= PATTERNS
    assert 0 <= v["confidence"] <= 1 and not v["abstain"] and v["reason"] is None
    assert set(v["per_pattern"]) == PATTERNS and all(0 <= p <= 1 for p in v["per_pattern"].values())
    assert v["per_pattern"][v["defects"][0]] >= v["confidence"] - 1e-4 if v["defects"] else True
    assert v["answer"].startswith("Diagnosis:") and r.usage.completion_tokens > 0
    z = json.loads(_ask(api, _wafer_png(), "这张晶圆图显示了什么缺陷模式？").choices[0].message.content)
    assert z["answer"].startswith("诊断：") and set(z["defects"]) <= PATTERNS  # (untrained: answers differ)


def test_non_wafer_image_abstains_in_the_structured_answer(api):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    v = json.loads(_ask(api, _png(noise)).choices[0].message.content)
    assert v["abstain"] is True and v["reason"] == OUT_OF_DOMAIN and v["defects"] == [] and v["confidence"] is None
    assert "does not look like a wafer map" in v["answer"]


def test_schema_without_room_for_the_assessment_is_decoded_under_it(api):
    other = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
             "additionalProperties": False}
    r = _ask(api, _wafer_png(), schema=other)
    text = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":  # the untrained model may run out of tokens first
        assert set(json.loads(text)) == {"ok"}
    assert "defects" not in text


@pytest.mark.parametrize("props", [
    {"defects": {"type": "array", "items": {"type": "string", "enum": sorted(PATTERNS)}}},
    {"defects": {"type": "array", "items": {"type": "string"}}, "confidence": {"type": "number"}},
])
def test_schema_asking_for_some_fields_gets_the_heads_values(api, props):
    """Not what the small LM decodes under the schema (it wrote ['Scratch', 'Scratch', ...] and confidence
    -2018.2): the head's own diagnosis, cut to the fields the client asked for."""
    full = json.loads(_ask(api, _wafer_png()).choices[0].message.content)
    schema = {"type": "object", "properties": props, "required": ["defects"]}
    v = json.loads(_ask(api, _wafer_png(), schema=schema).choices[0].message.content)
    assert v == {k: full[k] for k in props}


def _plain(client, image, max_tokens, **kw):
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": "What defect pattern does this wafer map show?"}]}]
    return client.chat.completions.create(model="tiny", messages=msgs, max_tokens=max_tokens, temperature=0, **kw)


def test_max_tokens_cuts_the_heads_answer(api):
    full = _plain(api, _wafer_png(), 200)
    cut = _plain(api, _wafer_png(), 3)
    assert full.choices[0].finish_reason == "stop" and full.usage.completion_tokens > 3
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    text = cut.choices[0].message.content
    assert text and full.choices[0].message.content.startswith(text) and len(text) < 20
    chunks = list(_plain(api, _wafer_png(), 3, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3
    hi = api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert hi.choices[0].finish_reason == "length" and hi.usage.completion_tokens == 5  # the help text, cut


def test_max_tokens_leaves_the_heads_json_whole(api):
    """The structured answer is one value, not decoded text: cut, it would not parse (docs/api.md)."""
    r = _plain(api, _wafer_png(), 3, response_format={"type": "json_schema",
                                                      "json_schema": {"name": "a", "schema": SCHEMA}})
    assert json.loads(r.choices[0].message.content)["answer"].startswith("Diagnosis:")
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens > 3
