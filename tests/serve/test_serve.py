"""`domainvlm serve` as a real server on loopback: the official openai client, raw HTTP, bad input."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from domainvlm.inference.engine import Engine, Sampling

from test_serve_engine import bomb_png, png

KEY = "test-key-123"
MAX_TOKENS = 6
Q = "What defect pattern does this wafer map show?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log_path, timeout: float = 120) -> subprocess.Popen:
    """Start a server process and wait until ``url`` answers; fail with its log if it dies first."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{open(log_path).read()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail(f"server did not come up within {timeout}s:\n{open(log_path).read()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "files").mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "domainvlm", "serve", "--model", str(tiny_model_dir), "--port", str(port),
           "--api-key", KEY, "--max-new-tokens", str(MAX_TOKENS), "--max-body-mb", "1", "--batch-wait-ms", "50",
           "--allow-local-files", str(tmp / "files"), "--served-model-name", "tiny-wafer", "--log-level", "warning"]
    proc = start(cmd, f"{base}/health", tmp / "server.log")
    yield {"base": base, "files": tmp / "files", "log": tmp / "server.log"}
    stop(proc)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir)


def expected(engine, messages, images, n=MAX_TOKENS) -> str:
    return engine.generate([(messages, images)], Sampling(max_new_tokens=n))[0]


def data_url(b: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(b).decode()


def img(b: bytes) -> Image.Image:
    return Image.open(io.BytesIO(b)).convert("RGB")


def client(server, key=KEY):
    from openai import OpenAI

    return OpenAI(base_url=server["base"] + "/v1", api_key=key, max_retries=0, timeout=60)


def image_message(b: bytes, q: str = Q) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(b)}},
                                         {"type": "text", "text": q}]}]


def test_openai_client_chat_with_image(server, engine):
    r = client(server).chat.completions.create(model="tiny-wafer", messages=image_message(png(1)),
                                               max_tokens=MAX_TOKENS)
    assert r.model == "tiny-wafer" and r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content == expected(engine, [{"role": "user", "content": f"<image>\n{Q}"}],
                                                    [img(png(1))])


def test_openai_client_streaming_multi_turn(server, engine):
    msgs = image_message(png(2)) + [{"role": "assistant", "content": "A Center pattern."},
                                    {"role": "user", "content": "What causes it?"}]
    stream = client(server).chat.completions.create(model="tiny-wafer", messages=msgs, max_tokens=5, stream=True,
                                                    temperature=0)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    want = expected(engine, [{"role": "user", "content": f"<image>\n{Q}"},
                             {"role": "assistant", "content": "A Center pattern."},
                             {"role": "user", "content": "What causes it?"}], [img(png(2))], n=5)
    assert text == want


def test_openai_client_models_and_sampling(server):
    c = client(server)
    assert [m.id for m in c.models.list()] == ["tiny-wafer"]
    r = c.chat.completions.create(model="tiny-wafer", messages=[{"role": "user", "content": "hello"}],
                                  max_tokens=4, temperature=0.9, top_p=0.8)
    assert isinstance(r.choices[0].message.content, str)


def test_local_file_url_only_inside_allowed_folder(server, engine):
    (server["files"] / "map.png").write_bytes(png(3))
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": (server["files"] / "map.png")
                                                                             .as_uri()}},
                                         {"type": "text", "text": Q}]}]
    r = client(server).chat.completions.create(model="tiny-wafer", messages=msgs, max_tokens=MAX_TOKENS)
    assert r.choices[0].message.content == expected(engine, [{"role": "user", "content": f"<image>\n{Q}"}],
                                                    [img(png(3))])
    msgs[0]["content"][0]["image_url"]["url"] = "file:///etc/hostname"
    r = httpx.post(server["base"] + "/v1/chat/completions", json={"messages": msgs},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "outside the allowed folder" in r.json()["error"]["message"]


def test_legacy_endpoint_raw_http(server, engine):
    h = {"Authorization": f"Bearer {KEY}"}
    b64 = base64.b64encode(png(4)).decode()
    r = httpx.post(server["base"] + "/", json={"image": b64, "text": Q, "history": []}, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    d = r.json()
    assert set(d) == {"response", "history", "status", "time"} and d["status"] == 200
    a1 = expected(engine, [{"role": "user", "content": f"<image>\n{Q}"}], [img(png(4))])
    assert d["response"] == a1 and d["history"] == [[Q, a1]]
    r = httpx.post(server["base"] + "/", json={"image": b64, "text": "Why?", "history": d["history"]},
                   headers=h, timeout=60)
    a2 = expected(engine, [{"role": "user", "content": f"<image>\n{Q}"}, {"role": "assistant", "content": a1},
                           {"role": "user", "content": "Why?"}], [img(png(4))])
    assert r.json()["response"] == a2 and r.json()["history"] == [[Q, a1], ["Why?", a2]]


def test_concurrent_requests_are_batched_and_correct(server, engine):
    want = [expected(engine, [{"role": "user", "content": f"<image>\n{Q}"}], [img(png(10 + i))]) for i in range(8)]

    def ask(i):
        r = httpx.post(server["base"] + "/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {KEY}"},
                       json={"messages": image_message(png(10 + i)), "max_tokens": MAX_TOKENS})
        return r.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(ask, range(8)))
    assert got == want
    assert httpx.get(server["base"] + "/health").json()["largest_batch"] > 1


def _bad(server, body: bytes | dict, key=KEY, path="/v1/chat/completions"):
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(server["base"] + path, headers=h, timeout=60, **kw)


BAD = [
    ("non-image bytes", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(b"%PDF-1.4 definitely not an image")}}]}]},
     400, "not a recognised image"),
    ("truncated png", {"messages": image_message(png(5)[:200])}, 400, "truncated"),
    ("20000x20000 png", {"messages": image_message(bomb_png())}, 413, "pixels"),
    ("malformed json", b'{"messages": [', 400, "malformed JSON"),
    ("json not an object", b"[1, 2]", 400, "body"),
    ("missing messages", {"model": "x"}, 400, "messages: field required"),
    ("missing content part url", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content[0].image_url.url"),
    ("bad role", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ("assistant last", {"messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message"),
    ("max_tokens over cap", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400, "limit"),
    ("n > 1", {"messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "n:"),
    ("remote url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]}, 400, "not fetched"),
    ("body too large", {"messages": [{"role": "user", "content": "x" * (2 << 20)}]}, 413, "body over the limit"),
    ("legacy missing text", ({"image": base64.b64encode(png(1)).decode()}, "/"), 400, "text: field required"),
    ("legacy bad base64", ({"text": "hi", "image": "%%%"}, "/"), 400, "invalid base64"),
]


@pytest.mark.parametrize("name, body, status, match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_4xx_json_and_server_keeps_serving(server, name, body, status, match):
    body, path = body if isinstance(body, tuple) else (body, "/v1/chat/completions")
    r = _bad(server, body, path=path)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert match in err["message"] and r.json()["status"] == status  # the number is the status, not the code
    assert err["code"] is None or isinstance(err["code"], str)
    assert httpx.get(server["base"] + "/health", timeout=10).json()["status"] == "ok"


def test_wrong_or_missing_api_key_is_401(server):
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        client(server, key="wrong").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    r = httpx.get(server["base"] + "/v1/models")
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert httpx.get(server["base"] + "/health").status_code == 200  # health stays open for probes


def test_openapi_spec_and_unknown_route(server):
    spec = httpx.get(server["base"] + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/models", "/", "/health"} <= set(spec["paths"])
    r = httpx.get(server["base"] + "/nope")
    assert r.status_code == 404 and "error" in r.json()
    assert "Traceback" not in server["log"].read_text()


def test_serve_bad_options_fail_in_one_line(tmp_path, tiny_model_dir, capsys):
    from domainvlm.cli import main

    for argv, msg in [(["serve", "--model", str(tmp_path / "none")], "model directory not found"),
                      (["serve", "--model", str(tiny_model_dir), "--port", "0"], "--port"),
                      (["serve", "--model", str(tiny_model_dir), "--allow-local-files", str(tmp_path / "x")],
                       "--allow-local-files")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
