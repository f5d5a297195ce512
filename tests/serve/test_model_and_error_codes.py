"""OpenAI fidelity of model names and error codes: a request naming a model the server does not serve is a 404
``model_not_found`` (an omitted model, the served id, ``domainvlm`` and the folder name are accepted), and
``error.code`` is OpenAI's string code or null, never the HTTP status number (that is ``status``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from domainvlm.inference.batcher import Batcher
from domainvlm.inference.engine import Engine, Sampling
from domainvlm.serve.app import ServeConfig, create_app

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir)


def _client(engine, **kw):
    cfg = ServeConfig(model_name="tiny-served", sampling=Sampling(max_new_tokens=2), **kw)
    return TestClient(create_app(Batcher(engine), cfg), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(engine):
    return _client(engine, api_key="k", model_aliases=("alias-x",))


AUTH = {"Authorization": "Bearer k"}


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_openais_404(client, stream):
    r = client.post("/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HI, "stream": stream})
    assert r.status_code == 404, r.text
    assert r.json() == {"error": {"message": "The model `gpt-4o` does not exist", "type": "invalid_request_error",
                                  "param": "model", "code": "model_not_found"}, "status": 404}


def test_served_names_and_omitted_model_are_accepted(client, tiny_model_dir):
    listed = client.get("/v1/models", headers=AUTH).json()["data"][0]["id"]
    assert listed == "tiny-served"
    for body in ({}, {"model": listed}, {"model": "domainvlm"}, {"model": tiny_model_dir.name},
                 {"model": str(tiny_model_dir)}, {"model": "alias-x"}):
        r = client.post("/v1/chat/completions", headers=AUTH, json={**body, "messages": HI})
        assert r.status_code == 200, (body, r.text)
        assert r.json()["model"] == listed


def test_retrieve_model(client):
    r = client.get("/v1/models/tiny-served", headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == "tiny-served" and r.json()["object"] == "model"
    r = client.get("/v1/models/nope", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_error_codes_are_strings_or_null(client, engine):
    r = client.post("/v1/chat/completions", json={"messages": HI})  # no key
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key" and r.json()["status"] == 401
    r = client.post("/v1/chat/completions", headers=AUTH, json={"messages": []})
    assert r.status_code == 400 and r.json()["error"]["code"] is None and r.json()["status"] == 400
    r = client.post("/v1/chat/completions", headers={**AUTH, "Content-Length": str(10**9)}, content=b"{}")
    assert r.status_code == 413 and r.json()["error"]["code"] is None and r.json()["status"] == 413
    short = _client(engine, max_prompt_tokens=4)
    r = short.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello " * 50}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "messages"


def test_legacy_route_keeps_its_status_field(client):
    r = client.post("/", headers=AUTH, json={"text": "hi", "temperature": False})
    body = r.json()
    assert r.status_code == 400 and body["status"] == 400 and not isinstance(body["error"]["code"], int)
    r = client.post("/", headers=AUTH, json={"text": "hi", "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["status"] == 200


def test_openapi_documents_the_404_and_a_string_code(client):
    spec = client.get("/openapi.json").json()
    assert "404" in spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "404" in spec["paths"]["/v1/models/{model}"]["get"]["responses"]
    code = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert code["type"] == ["string", "null"]
