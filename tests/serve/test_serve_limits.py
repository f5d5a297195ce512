"""Server reliability: over-long prompts refused fast, a time limit per batch, /health that sees a stuck engine."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from domainvlm.inference.batcher import Batcher
from domainvlm.inference.engine import Engine, Sampling
from domainvlm.inference.prompt_guard import PromptBudget, PromptTooLong
from domainvlm.models.chat_format import encode_prompt
from domainvlm.serve.app import ServeConfig, create_app

S = Sampling(max_new_tokens=6)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir)


def client(engine, **cfg) -> TestClient:
    return TestClient(create_app(Batcher(engine), ServeConfig(sampling=S, **cfg)), raise_server_exceptions=False)


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


def test_prompt_count_is_what_the_processor_feeds_the_model(engine):
    b = PromptBudget(engine.processor, engine.model)
    convs = [([{"role": "user", "content": "<image>\nWhat defect?"}], [Image.new("RGB", (52, 52))]),
             ([{"role": "system", "content": "be brief"}, {"role": "user", "content": "<image>\nWhat 晶圆?"},
               {"role": "assistant", "content": "Center"}, {"role": "user", "content": "why?"}],
              [Image.new("RGB", (90, 40))]),
             ([{"role": "user", "content": "hi"}], [])]
    for msgs, ims in convs:
        assert b.check(msgs, ims) == encode_prompt(engine.processor, msgs, ims)["input_ids"].shape[1]


def test_huge_prompt_refused_without_tokenising(engine):
    b = PromptBudget(engine.processor, engine.model)
    b.processor = b.tok = None  # any tokenisation would now fail: the character bound must decide alone
    with pytest.raises(PromptTooLong, match="over this server's limit of 1,024 tokens"):
        b.check([{"role": "user", "content": "defect " * 200000}], [])


def test_long_prompts_get_400_on_both_routes_and_short_ones_answer(engine):
    c = client(engine)
    r = c.post("/v1/chat/completions", json=user("defect " * 200000))  # 1.4 MB, under the body limit
    assert r.status_code == 400 and "limit of 1,024 tokens" in r.json()["error"]["message"], r.text
    many = {"messages": [{"role": "user", "content": "what defect pattern is on this wafer map"}] * 1000}
    r = c.post("/v1/chat/completions", json=many)  # passes the character bound: counted exactly
    assert r.status_code == 400 and "the prompt is " in r.json()["error"]["message"], r.text
    r = c.post("/", json={"text": "defect " * 5000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    capped = client(engine, max_prompt_tokens=40)
    assert capped.post("/v1/chat/completions", json=user("hi")).status_code == 200
    r = capped.post("/v1/chat/completions", json=user("wafer " * 60))
    assert r.status_code == 400 and "limit of 40 tokens" in r.json()["error"]["message"]
    assert capped.get("/health").json()["status"] == "ok"


def test_cap_over_the_models_context_is_refused_at_start(engine):
    from domainvlm.errors import UserError

    with pytest.raises(UserError, match="over the model's context of 1024"):
        PromptBudget(engine.processor, engine.model, 5000)


def test_request_timeout_cuts_decoding_short(engine):
    convs = [([{"role": "user", "content": "Describe the wafer"}], [])]
    long = Sampling(max_new_tokens=60)
    tok = engine.processor.tokenizer
    free = engine.generate(convs, long)[0]
    assert len(tok(free)["input_ids"]) > 10  # the untrained tiny model rambles to the token limit
    engine.time_limit = 1e-6
    try:
        cut = engine.generate(convs, long)[0]
        streamed = "".join(engine.stream(*convs[0], long))
    finally:
        engine.time_limit = None
    assert len(tok(cut)["input_ids"]) <= 2 and len(tok(streamed)["input_ids"]) <= 2


def test_health_reports_a_stuck_engine(engine, monkeypatch):
    app_client = client(engine, request_timeout=0.2)  # stuck after 0.2 * 1.1 + 1 s on one batch
    release = threading.Event()
    monkeypatch.setattr(engine, "generate", lambda convs, s=None: release.wait(30) and ["late"] * len(convs))
    t = threading.Thread(target=app_client.post, args=("/v1/chat/completions",), kwargs={"json": user("hi")})
    t.start()
    try:
        deadline, r = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            r = app_client.get("/health")
            if r.status_code != 200:
                break
            time.sleep(0.1)
        assert r.status_code == 503 and r.json()["status"] == "stuck", r.text
        assert "request timeout 0.2 s" in r.json()["reason"]
        assert r.headers["retry-after"] == "1"
    finally:
        release.set()
        t.join(30)
    assert app_client.get("/health").json()["status"] == "ok"


def test_legacy_route_refuses_an_empty_image(engine):
    import base64

    c = client(engine)
    for image in ("", "   ", base64.b64encode(b"").decode(), "data:image/png;base64,"):  # "" is a 0-byte file
        r = c.post("/", json={"text": "What defect is this?", "image": image})
        assert r.status_code == 400 and r.json()["error"]["param"] == "image", (image, r.text)
        assert "empty" in r.json()["error"]["message"]
    assert c.post("/", json={"text": "hi"}).status_code == 200  # no image at all: a text-only question


def test_extreme_sampling_numbers_answer_or_400_never_500(engine, tmp_path):
    c = client(engine, local_files_root=tmp_path)
    for extra in ({"temperature": 1, "repetition_penalty": 5e-324}, {"temperature": 2, "repetition_penalty": 5e-324},
                  {"temperature": 1e-300}, {"temperature": 1, "top_p": 1e-300}):  # in range: answered
        r = c.post("/v1/chat/completions", json={**user("wafer wafer wafer"), **extra, "max_tokens": 8})
        assert r.status_code == 200, (extra, r.text)
    r = c.post("/v1/chat/completions", json={**user("wafer"), "temperature": 1, "repetition_penalty": 1e300})
    assert r.status_code == 400 and "repetition_penalty" in r.json()["error"]["message"], r.text  # over the range
    greedy = c.post("/v1/chat/completions", json={**user("hi"), "max_tokens": 8}).json()
    tiny_t = c.post("/v1/chat/completions", json={**user("hi"), "max_tokens": 8, "temperature": 1e-300}).json()
    assert tiny_t["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]
    r = c.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "hi"}], '
               b'"repetition_penalty": Infinity}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "repetition_penalty" in r.json()["error"]["message"], r.text


def test_bad_file_urls_are_400(engine, tmp_path):
    c = client(engine, local_files_root=tmp_path)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for url, says in ((f"file://{tmp_path}/x%00.png", "NUL byte"), ("file://[/x.png", "not a valid URL"),
                      (f"file://otherhost{tmp_path}/x.png", "not host 'otherhost'"),
                      (f"file://{tmp_path}/a", "cannot be resolved")):
        body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and says in r.json()["error"]["message"], (url, r.text)
        assert str(tmp_path / "b") not in r.text  # no symlink target shown
