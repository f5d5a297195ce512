"""API key from the environment, checked before the body is parsed; protected docs; 405 with Allow."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from domainvlm.cli import build_parser
from domainvlm.commands import serve
from domainvlm.errors import UserError

KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def apps(tiny_model_dir):
    import os

    os.environ["MY_TEST_KEY"] = "s3cret"
    try:
        built = {}
        for name, extra in (("open_docs", []), ("protected", ["--protect-docs"])):
            args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), "--api-key-env", "MY_TEST_KEY",
                                              "--max-new-tokens", "4", *extra])
            built[name] = TestClient(serve.build(args)[0], raise_server_exceptions=False)
        yield built
    finally:
        del os.environ["MY_TEST_KEY"]


def test_key_from_env_is_checked_before_the_body(apps):
    c = apps["open_docs"]
    r = c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # not a 400 about the JSON
    assert c.post("/", json={"text": "hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                  headers=KEY).status_code == 200
    assert c.get("/health").status_code == 200  # monitors need no key


def test_docs_are_open_unless_protected(apps):
    assert apps["open_docs"].get("/openapi.json").status_code == 200
    assert apps["open_docs"].get("/docs").status_code == 200
    p = apps["protected"]
    assert p.get("/openapi.json").status_code == 401 and p.get("/docs").status_code == 401
    assert p.get("/openapi.json", headers=KEY).status_code == 200


def test_405_names_the_allowed_methods(apps):
    r = apps["open_docs"].get("/v1/chat/completions", headers=KEY)
    assert r.status_code == 405 and "POST" in r.headers["allow"] and r.json()["status"] == 405


def test_missing_env_key_or_docs_without_key_fail_in_one_line(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    monkeypatch.delenv("DOMAINVLM_API_KEY", raising=False)
    for extra, says in ((["--api-key-env", "NOPE_KEY"], "NOPE_KEY is not set"),
                        (["--protect-docs"], "--protect-docs needs an API key")):
        args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), *extra])
        with pytest.raises(UserError, match=says):
            serve.build(args)
