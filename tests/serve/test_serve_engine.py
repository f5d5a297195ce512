"""Engine streaming robustness, the micro-batcher, image input limits and the API app in-process."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from domainvlm.inference.batcher import Batcher, Busy
from domainvlm.inference.engine import Engine, Sampling
from domainvlm.inference.image_input import ImageInputError, ImageTooLarge, decode_base64, decode_image, load_url

S = Sampling(max_new_tokens=6)


def png(seed: int = 0, size: int = 40) -> bytes:
    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(w: int = 20000, h: int = 20000) -> bytes:
    """A real, valid 1-bit PNG of w x h pixels that compresses to ~50 KB (decompression bomb)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    co, row = zlib.compressobj(9), b"\0" * (1 + (w + 7) // 8)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir)


def conv(q: str, seed: int | None = 0):
    if seed is None:
        return [{"role": "user", "content": q}], []
    return [{"role": "user", "content": f"<image>\n{q}"}], [Image.open(io.BytesIO(png(seed)))]


def test_stream_matches_generate_and_frees_engine_when_closed_early(engine):
    msgs, imgs = conv("What defect is this?")
    full = engine.generate([(msgs, imgs)], S)[0]
    assert "".join(engine.stream(msgs, imgs, S)) == full
    it = engine.stream(msgs, imgs, Sampling(max_new_tokens=400))
    next(it)
    it.close()  # consumer gone: generation must stop and release the engine
    assert engine.lock.acquire(timeout=60), "engine lock still held after the stream was closed"
    engine.lock.release()


def test_stream_reraises_generation_errors_instead_of_hanging(engine, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("device on fire")

    monkeypatch.setattr(engine.model, "generate", boom)
    with pytest.raises(RuntimeError, match="device on fire"):
        list(engine.stream(*conv("hi", None), S))
    assert not engine.lock.locked()


def test_batcher_batches_concurrent_requests_and_isolates_a_failing_one(engine, monkeypatch):
    convs = [conv("What defect is this?", seed) for seed in range(6)]
    expected = [engine.generate([c], S)[0] for c in convs]
    b = Batcher(engine, max_batch=8, max_wait_ms=200)
    real = engine.generate

    def picky(cs, sampling=None):  # one poisoned conversation fails any batch that contains it
        if any(m[-1]["content"].endswith("POISON") for m, _ in cs):
            raise ValueError("poisoned")
        return real(cs, sampling)

    futs = [b.submit(m, i, S) for m, i in convs]
    assert [f.result(timeout=120) for f in futs] == expected
    assert b.largest_batch > 1, "concurrent requests were not batched"
    b.largest_batch = 0
    monkeypatch.setattr(engine, "generate", picky)
    futs = [b.submit(m, i, S) for m, i in convs[:3]]
    bad = b.submit(*conv("POISON", 9), S)
    futs += [b.submit(m, i, S) for m, i in convs[3:]]
    assert [f.result(timeout=120) for f in futs] == expected
    with pytest.raises(ValueError, match="poisoned"):
        bad.result(timeout=60)
    assert b.largest_batch > 1
    b.close()


def test_batcher_refuses_when_queue_full(engine):
    b = Batcher(engine, max_batch=1, max_queue=2)
    with engine.lock:  # engine busy: nothing drains the queue
        b.submit(*conv("a", None), S)
        b.submit(*conv("b", None), S)
        with pytest.raises(Busy, match="limit 2"):
            b.submit(*conv("c", None), S)
    b.close()


@pytest.mark.parametrize("data, err, match", [
    (b"", ImageInputError, "empty"),
    (b"this is not an image at all", ImageInputError, "not a recognised image"),
    (png(1)[:300], ImageInputError, "truncated"),
    (bomb_png(), ImageTooLarge, "400,000,000 pixels"),
    (bomb_png(5000, 4000), ImageTooLarge, "5000x4000"),
])
def test_decode_image_refuses_bad_bytes(data, err, match):
    with pytest.raises(err, match=match):
        decode_image(data, "image", max_pixels=16_000_000)


def test_image_urls(tmp_path):
    (tmp_path / "ok.png").write_bytes(png(2))
    b64 = base64.b64encode(png(2)).decode()
    assert decode_base64(b64).size == (40, 40)
    assert load_url(f"data:image/png;base64,{b64}").size == (40, 40)
    assert load_url((tmp_path / "ok.png").as_uri(), local_root=tmp_path).size == (40, 40)
    with pytest.raises(ImageInputError, match="disabled"):
        load_url((tmp_path / "ok.png").as_uri())
    with pytest.raises(ImageInputError, match="outside"):
        load_url("file:///etc/passwd", local_root=tmp_path)
    with pytest.raises(ImageInputError, match="not fetched"):
        load_url("https://example.com/x.png")
    with pytest.raises(ImageInputError, match="invalid base64"):
        decode_base64("data:image/png;base64,@@@")


def test_app_stream_reports_generation_error_in_band(engine, monkeypatch):
    from fastapi.testclient import TestClient

    from domainvlm.serve.app import ServeConfig, create_app

    app = create_app(Batcher(engine), ServeConfig(model_name="tiny", sampling=S))
    client = TestClient(app, raise_server_exceptions=False)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert r.status_code == 200 and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(engine.model, "generate", boom)
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert "kaboom" in json.loads(events[-2][6:])["error"]["message"]
    r = client.post("/v1/chat/completions", json={**body, "stream": False})
    assert r.status_code == 500 and "kaboom" in r.json()["error"]["message"]
    monkeypatch.undo()
    assert client.post("/v1/chat/completions", json={**body, "stream": False}).status_code == 200
    assert client.get("/health").json()["streams"] == 0


def test_threads_share_engine_safely(engine):
    """Streams and batched requests from many threads at once all complete with the right answers."""
    b = Batcher(engine, max_batch=4)
    msgs, imgs = conv("Describe the map", 3)
    want = engine.generate([(msgs, imgs)], S)[0]
    got, errors = [], []

    def worker(i):
        try:
            got.append("".join(b.stream(msgs, imgs, S)) if i % 2 else b.generate(msgs, imgs, S))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    assert not errors and got == [want] * 8
    b.close()


def test_app_validation_messages_name_the_field(engine):
    from fastapi.testclient import TestClient

    from domainvlm.serve.app import ServeConfig, create_app

    c = TestClient(create_app(Batcher(engine), ServeConfig(sampling=S)), raise_server_exceptions=False)
    cases = [({"content": b'{"messages": []}'}, "Content-Type: application/json"),
             ({"json": {"messages": [{"role": "user", "content": 5}]}}, "messages[0].content: wrong type (int)"),
             ({"json": {"messages": [{"role": "user", "content": "a <image> b"}]}}, "reserved token"),
             ({"json": {"messages": [{"role": "user", "content": "hi"}], "temperature": -1}}, "temperature:")]
    for kw, msg in cases:
        r = c.post("/v1/chat/completions", **kw)
        assert r.status_code == 400 and msg in r.json()["error"]["message"], r.text
    r = c.post("/", json={"text": "hi", "history": [["only a question"]]})
    assert r.status_code == 400 and "history[0]" in r.json()["error"]["message"]
    r = c.post("/", json={"text": "q", "max_new_tokens": 10**6})  # the field POST / has, not max_tokens
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_new_tokens", r.text
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": []}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content", r.text
    r = c.post("/", json={"text": "why?", "history": [["q", "see <image> here"]]})  # was a 500 from the processor
    assert r.status_code == 400 and r.json()["error"]["param"] == "history[0][1]", r.text


def test_line_wrapped_base64_is_accepted():
    """`base64 map.png` wraps at 76 columns (as MIME does); VisualGLM's own server took that, so do we."""
    raw = base64.b64encode(png(3)).decode()
    wrapped = "\n".join(raw[i:i + 76] for i in range(0, len(raw), 76)) + "\n"
    want = decode_base64(raw)
    for s in (wrapped, "data:image/png;base64," + wrapped.replace("\n", "\r\n")):
        assert decode_base64(s).tobytes() == want.tobytes()
    with pytest.raises(ImageInputError, match="invalid base64"):
        decode_base64(raw[:40] + "*" + raw[40:])  # other junk is still refused


def test_validation_errors_name_the_field_in_param(engine):
    """OpenAI clients read error.param to find the bad field; schema errors must fill it, not leave null."""
    from fastapi.testclient import TestClient

    from domainvlm.serve.app import ServeConfig, create_app

    c = TestClient(create_app(Batcher(engine), ServeConfig(sampling=S)), raise_server_exceptions=False)
    hi = [{"role": "user", "content": "hi"}]
    cases = [({"messages": hi, "max_tokens": 0}, "max_tokens"), ({"messages": hi, "temperature": "0.5"}, "temperature"),
             ({"model": "x"}, "messages"), ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
             ({"messages": hi, "foo": 1}, "foo"), ({"messages": hi, "stop": ["a"] * 5}, "stop"),
             ({"messages": hi, "response_format": {"type": "json_schema"}}, "response_format.json_schema")]
    for body, param in cases:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    # a typo inside a message was ignored: the user turn went out empty and the model answered that with a 200
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "contents": "What defect?"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].contents", r.text
    back = {"role": "assistant", "content": "a", "refusal": None, "tool_calls": None, "annotations": None,
            "audio": None, "function_call": None, "name": "bot"}  # what the openai SDK dumps of an answer
    r = c.post("/v1/chat/completions", json={"messages": [hi[0], back, hi[0]], "max_tokens": 1})
    assert r.status_code == 200, r.text
    r = c.post("/v1/chat/completions", json={"messages": [hi[0], {**back, "tool_calls": [{"id": "1"}]}, hi[0]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].tool_calls", r.text
    assert c.post("/", json={"image": "x"}).json()["error"]["param"] == "text"
    r = c.post("/", json={"text": "hi", "max_length": 64})  # ChatGLM's name: ignoring it would mislead
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_length", r.text
    assert r.json()["error"]["message"] == "max_length: not supported by this server"
    r = c.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] is None  # the body as a whole
    r = c.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "\xff"}]}',
               headers={"content-type": "application/json"})  # latin-1 text, not UTF-8
    assert r.status_code == 400 and r.json()["error"]["message"] == "malformed JSON body (not UTF-8: byte 0xff at " \
        "position 43)", r.text


def test_stream_uses_the_models_answer_head(engine, monkeypatch):
    """Models with an answer head stream the head's answer, so chat/API/web UI agree with ask/eval."""
    class Head:  # the engine's head hook: one answer (or None) per conversation
        def answer(self, convs, sampling):
            return [f"Diagnosis: Center ({len(convs)})"] * len(convs)

    monkeypatch.setattr(engine, "answer_head", Head())
    room = Sampling(max_new_tokens=64)  # S's 6 tokens would cut the head's answer (as they cut free decoding)
    assert list(engine.stream(*conv("What defect?"), room)) == ["Diagnosis: Center (1)"]
    assert engine.generate([conv("What defect?")], room) == ["Diagnosis: Center (1)"]


def test_streams_are_batched_token_by_token_and_a_closed_one_stops_alone(engine):
    convs = [conv("What defect is this?", seed) for seed in range(4)]
    long = Sampling(max_new_tokens=40)
    want = [engine.generate([c], long)[0] for c in convs]
    b = Batcher(engine, max_batch=8, max_wait_ms=300)
    its = [b.stream(m, i, long) for m, i in convs]  # all queued before the worker's wait ends: one batch
    first = [next(it) for it in its[:3]]  # pieces arrive while the batch is still generating
    its[3].close()  # this client leaves; its row stops, the others carry on
    got = [f + "".join(it) for f, it in zip(first, its[:3])]
    assert got == want[:3]
    assert b.largest_batch == 4 and b.batches_run == 1 and b.streams == 0
    b.close()


def test_row_streamer_pieces_rebuild_the_answer(engine):
    from domainvlm.inference.streaming import RowStreamer

    pieces: dict[int, list[str]] = {0: [], 1: []}
    rs = RowStreamer(engine.processor.tokenizer, 2, lambda i, s: pieces[i].append(s))
    tok = engine.processor.tokenizer
    ids = tok("Center 模式 pattern", add_special_tokens=False)["input_ids"]
    rs.put(torch.zeros((2, 3), dtype=torch.long))  # the prompt comes first and is not shown
    for t in ids:
        rs.put(torch.tensor([t, tok.eos_token_id]))  # row 1 has ended: only end-of-turn tokens
    rs.end()
    assert "".join(pieces[0]) == tok.decode(ids, skip_special_tokens=True) and "".join(pieces[1]) == ""
    assert all("\ufffd" not in p for p in pieces[0])  # half characters are held back, never shown
