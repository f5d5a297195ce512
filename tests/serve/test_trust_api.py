"""The API's opt-in trust extensions with a wafer-head model (FastAPI TestClient, the official openai client
over it): the Assessment schema gets evidence and map facts, ``evidence_png`` returns the overlay as a PNG data
URL, ``POST /`` likewise; plain requests stay unannotated; bad uses are one-line 400s."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from domainvlm.inference.assessment import OUT_OF_DOMAIN, SCHEMA
from domainvlm.inference.engine import Engine

from test_serve import data_url
from test_structured_answers import _png, _wafer_png

Q = "What defect pattern does this wafer map show?"


def _app(model_dir):
    from domainvlm.inference.batcher import Batcher
    from domainvlm.serve.app import ServeConfig, create_app

    eng = Engine(str(model_dir), device="cpu", threads=1)
    batcher = Batcher(eng, max_batch=4, max_wait_ms=5)
    return create_app(batcher, ServeConfig(model_name="tiny", max_tokens_cap=256)), batcher


@pytest.fixture(scope="module")
def http(tiny_wafer_head_dir):
    app, batcher = _app(tiny_wafer_head_dir)
    with TestClient(app) as c:
        c.engine = batcher.engine
        yield c
    batcher.close()


@pytest.fixture(scope="module")
def client(http):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0, http_client=http)


def _msgs(image: bytes, q=Q):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": q}]}]


def _schema(schema):
    return {"type": "json_schema", "json_schema": {"name": "assessment", "schema": schema}}


def _decode_png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_assessment_schema_gets_evidence_and_facts(client, http):
    r = client.chat.completions.create(model="tiny", messages=_msgs(_wafer_png()), max_tokens=200, temperature=0,
                                       response_format=_schema(SCHEMA))
    v = json.loads(r.choices[0].message.content)
    assert not v["abstain"] and isinstance(v["evidence"], list)
    f = v["facts"]
    assert f["dies"] > 0 and 0 <= f["failing"] <= f["dies"] and 0 <= f["yield_pct"] <= 100
    assert len(v["evidence"]) == len(v["defects"])  # one entry per named pattern (untrained: may name none)
    for e in v["evidence"]:
        assert e["pattern"] in v["defects"] and e["dies"]
    assert http.engine.answer_head.annotators == []  # annotation was for that batch only


def test_schema_without_evidence_or_facts_is_not_annotated(client):
    r = client.chat.completions.create(model="tiny", messages=_msgs(_wafer_png()), max_tokens=200, temperature=0,
                                       response_format=_schema({"type": "object"}))
    v = json.loads(r.choices[0].message.content)
    assert "defects" in v and v["facts"] == {} and v["evidence"] == []


def test_plain_answer_unchanged_by_annotated_requests(client, http):
    def plain():
        r = client.chat.completions.create(model="tiny", messages=_msgs(_wafer_png(1)), max_tokens=200,
                                           temperature=0)
        return r.choices[0].message

    before = plain()
    client.chat.completions.create(model="tiny", messages=_msgs(_wafer_png(1)), max_tokens=200, temperature=0,
                                   extra_body={"evidence_png": True})
    after = plain()
    assert before.content == after.content and before.content.startswith("Diagnosis:")
    assert "evidence_png" not in (after.model_extra or {})


def test_evidence_png_is_the_overlay_as_a_data_url(client, http):
    r = client.chat.completions.create(model="tiny", messages=_msgs(_wafer_png(2)), max_tokens=200, temperature=0,
                                       extra_body={"evidence_png": True})
    msg = r.choices[0].message
    img = _decode_png(msg.model_extra["evidence_png"])
    size = http.engine.answer_head.size
    assert img.width == 2 * size and img.height > 2 * size  # the map at scale 2 with the legend under it
    assert msg.content.startswith("Diagnosis:")


def test_evidence_png_of_a_non_wafer_image_is_null_and_abstains(client):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    r = client.chat.completions.create(model="tiny", messages=_msgs(_png(noise)), max_tokens=200, temperature=0,
                                       response_format=_schema(SCHEMA), extra_body={"evidence_png": True})
    v = json.loads(r.choices[0].message.content)
    assert v["abstain"] and v["reason"] == OUT_OF_DOMAIN and r.choices[0].message.model_extra["evidence_png"] is None


def test_evidence_png_of_a_low_confidence_abstention_is_null(client, http, monkeypatch):
    """The API drew the withheld guess's evidence under an 'Uncertain' answer (ask --evidence-png writes nothing)."""
    from dataclasses import replace

    head = http.engine.answer_head
    monkeypatch.setattr(head, "calibration", replace(head.calibration, threshold=1.01))  # every answer abstains
    r = client.chat.completions.create(model="tiny", messages=_msgs(_wafer_png(2)), max_tokens=200, temperature=0,
                                       response_format=_schema(SCHEMA), extra_body={"evidence_png": True})
    v = json.loads(r.choices[0].message.content)
    assert v["abstain"] and v["reason"] == "low_confidence" and v["evidence"] == []
    assert r.choices[0].message.model_extra["evidence_png"] is None


def test_two_images_in_one_message_to_a_compact_model_are_a_400(http):
    """Answered about the second image alone, with no word of it; a new image in a later message still works."""
    img = {"type": "image_url", "image_url": {"url": data_url(_wafer_png())}}
    two = [{"role": "user", "content": [img, img, {"type": "text", "text": Q}]}]
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": two, "max_tokens": 50})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "messages[0].content" and "one image per question" in err["message"]
    turns = [{"role": "user", "content": [img, {"type": "text", "text": Q}]}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": [img, {"type": "text", "text": Q}]}]
    assert http.post("/v1/chat/completions", json={"model": "tiny", "messages": turns, "max_tokens": 50}).status_code == 200


def test_evidence_png_bad_uses_are_400s(http, tiny_model_dir):
    body = {"messages": _msgs(_wafer_png()), "evidence_png": True, "stream": True}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["message"] == "evidence_png: not available with stream: true"
    r = http.post("/v1/chat/completions", json={**body, "stream": False, "evidence_png": "yes"})
    assert r.status_code == 400 and "evidence_png" in r.json()["error"]["message"]
    app, batcher = _app(tiny_model_dir)  # no answer head: nothing to draw
    try:
        with TestClient(app) as plain:
            r = plain.post("/v1/chat/completions", json={**body, "stream": False})
            assert r.status_code == 400 and r.json()["error"]["param"] == "evidence_png"
            assert "no answer head that gives evidence" in r.json()["error"]["message"]
            r = plain.post("/", json={"text": Q, "assessment": True})
            assert r.status_code == 400 and r.json()["error"]["param"] == "assessment"
    finally:
        batcher.close()


def test_legacy_route_returns_assessment_and_overlay(http):
    img = base64.b64encode(_wafer_png(3)).decode()
    r = http.post("/", json={"text": Q, "image": img, "assessment": True, "evidence_png": True, "max_new_tokens": 200})
    assert r.status_code == 200, r.text
    v = r.json()
    a = v["assessment"]
    assert a["answer"] == v["response"] and a["facts"]["dies"] > 0 and 0 <= a["confidence"] <= 1
    assert _decode_png(v["evidence_png"]).width == 2 * http.engine.answer_head.size
    plain = http.post("/", json={"text": Q, "image": img, "max_new_tokens": 200}).json()
    assert "assessment" not in plain and "evidence_png" not in plain and plain["response"].startswith("Diagnosis:")


def test_openapi_documents_the_extensions(http):
    doc = http.get("/openapi.json").json()["components"]["schemas"]
    assert doc["ChatCompletionRequest"]["properties"]["evidence_png"]["type"] == "boolean"
    assert {"assessment", "evidence_png"} <= set(doc["LegacyRequest"]["properties"])
    assert {"assessment", "evidence_png"} <= set(doc["LegacyResponse"]["properties"])
    assert "assessment" not in doc["LegacyResponse"].get("required", [])
