"""/openapi.json documents what the server answers (schemathesis found 400/401/413/500/503 and the SSE stream
undocumented, a 422 documented that never comes, and the legacy route accepting "temperature": false)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from domainvlm.inference.batcher import Batcher
from domainvlm.inference.engine import Engine, Sampling
from domainvlm.serve.app import ServeConfig, create_app


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    app = create_app(Batcher(Engine(tiny_model_dir)), ServeConfig(model_name="tiny", sampling=Sampling(max_new_tokens=4)))
    return TestClient(app, raise_server_exceptions=False)


def test_every_status_the_server_sends_is_documented(client):
    spec = client.get("/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    legacy = spec["paths"]["/"]["post"]["responses"]
    for responses in (chat, legacy):
        assert "422" not in responses and {"200", "400", "401", "413", "500", "503"} <= set(responses)
        assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(chat["200"]["content"]) == {"application/json", "text/event-stream"}
    assert set(spec["paths"]["/health"]["get"]["responses"]) == {"200", "503"}  # monitors need no key: no 401
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    # and the error body really has the documented shape
    r = client.post("/v1/chat/completions", json={"messages": []})
    err = spec["components"]["schemas"]["Error"]
    assert r.status_code == 400 and set(err["required"]) <= set(r.json())
    assert set(err["properties"]["error"]["required"]) <= set(r.json()["error"])
    assert client.get("/openapi.json").json() == spec  # patched once, served the same every time


@pytest.mark.parametrize("field,value", [("temperature", False), ("max_new_tokens", "5"), ("top_p", True),
                                         ("text", 5)])
def test_legacy_route_is_strictly_typed(client, field, value):
    r = client.post("/", json={"text": "hi", field: value})
    assert r.status_code == 400 and field in r.json()["error"]["message"]
