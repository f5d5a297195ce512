"""Image memory: one pixel limit read from the header on every CLI path, palette checks that stay small for big
images, and a budget for decoded images waiting in the server's queue (503 + Retry-After past it)."""

from __future__ import annotations

import json
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainvlm.cli import main
from domainvlm.data import images as images_mod
from domainvlm.domains.wafer.render import _LUT, palette_index
from domainvlm.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # the image helpers' folder
from test_serve_engine import bomb_png  # noqa: E402 - shared bad-image builders


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    p = tmp_path_factory.mktemp("bomb") / "big.png"
    p.write_bytes(bomb_png(9000, 9000))  # 99 KB on disk, 81 MP decoded (PIL only warns below 128 MP)
    return p


def test_load_image_refuses_from_the_header(bomb, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"big.png: image is 9000x9000 = 81,000,000 pixels, over the limit of 64,000,000"):
        images_mod.load_image(str(bomb))
    small = tmp_path / "s.png"
    Image.new("RGB", (200, 100)).save(small)
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 10_000)  # the one knob every path reads
    with pytest.raises(UserError, match="200x100 = 20,000 pixels, over the limit of 10,000"):
        images_mod.load_image(str(small))


def test_ask_and_data_validate_refuse_a_pixel_bomb_in_one_line(bomb, tmp_path, capsys):
    assert main(["ask", "--image", str(bomb), "What defect?"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "big.png: image is 9000x9000" in err[0]
    d = tmp_path / "d.jsonl"
    rec = {"id": "r1", "images": [str(bomb)], "messages": [{"role": "user", "content": "<image>\nq"},
                                                          {"role": "assistant", "content": "a"}]}
    d.write_text(json.dumps(rec) + "\n")
    assert main(["data", "validate", str(d)]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "r1" in err[0] and "over the limit" in err[0]


def _brute_palette(img, tol=24) -> bool:  # the former implementation: (H, W, 3, 3) int32
    a = np.asarray(img.convert("RGB"), dtype=np.int32)
    return bool((np.abs(a[:, :, None, :] - _LUT[None, None].astype(np.int32)).max(-1).min(-1) <= tol).all())


def test_palette_check_agrees_with_brute_force_and_stays_small():
    from domainvlm.domains.wafer.canvas import is_palette_image

    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 60, 2)
        a = _LUT[rng.integers(0, 3, (h, w))].astype(int)
        a += rng.integers(-30, 31, (h, w, 3)) * (rng.random((h, w, 1)) < rng.random() * 0.05)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        assert is_palette_image(im) == _brute_palette(im)
        assert (palette_index(im) == _brute_labels(im)).all()
    noisy = np.clip(_LUT[rng.integers(0, 3, (400, 400))].astype(int) + rng.integers(-20, 21, (400, 400, 3)), 0, 255)
    im = Image.fromarray(noisy.astype(np.uint8))  # re-encoding noise on every pixel
    assert is_palette_image(im) == _brute_palette(im) is True
    assert (palette_index(im) == _brute_labels(im)).all()
    big = Image.new("RGB", (4000, 4000), tuple(int(x) for x in _LUT[1]))  # 16 MP: 576 MB the former way
    tracemalloc.start()
    try:
        assert is_palette_image(big) and palette_index(big).shape == (4000, 4000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 << 20, f"peak {peak / 2**20:.0f} MB"  # ~14 bytes per pixel; the (H, W, 3, 3) int32 way: 770 MB


def _brute_labels(img):
    a = np.asarray(img.convert("RGB"), dtype=np.int32)
    return ((a[:, :, None, :] - _LUT[None, None].astype(np.int32)) ** 2).sum(-1).argmin(-1)


class _Blocked:
    """Engine stand-in whose generate waits until released (a busy engine)."""

    def __init__(self, processor=None):
        self.release, self.processor = threading.Event(), processor

    def generate(self, convs, sampling=None):
        self.release.wait(30)
        return ["ok"] * len(convs)


def test_queue_refuses_images_over_the_memory_budget():
    from domainvlm.inference.batcher import Batcher, Busy

    eng = _Blocked()
    b = Batcher(eng, max_batch=1, max_image_bytes=1 << 20)
    img = [Image.new("RGB", (350, 350))]  # 490,000 bytes decoded (PIL: 4 bytes a pixel)
    msgs = [{"role": "user", "content": "<image>\nq"}]
    futs = [b.submit(msgs, img), b.submit(msgs, img)]  # the first runs, the second waits: 980,000 bytes
    with pytest.raises(Busy, match="MB of decoded images queued"):
        b.submit(msgs, img)
    eng.release.set()
    assert [f.result(30) for f in futs] == ["ok", "ok"]
    assert b.image_bytes == 0 and b.submit(msgs, img).result(30) == "ok"  # accounted back when they finish
    lone = Batcher(eng, max_image_bytes=1000)  # one request alone may exceed it: its images have own limits
    assert lone.submit(msgs, img).result(30) == "ok"
    b.close(), lone.close()


def test_busy_is_503_with_retry_after(tiny_model_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from domainvlm.inference.batcher import Batcher, Busy
    from domainvlm.inference.engine import Engine
    from domainvlm.serve.app import ServeConfig, create_app

    b = Batcher(Engine(tiny_model_dir))

    def full(*a, **k):
        raise Busy("server busy: 3 requests queued (limit 3)")

    monkeypatch.setattr(b, "submit", full)
    c = TestClient(create_app(b, ServeConfig()), raise_server_exceptions=False)
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"]


def test_garbage_dicom_upload_says_so_without_internals():
    import os

    from domainvlm.inference.image_input import ImageInputError, decode_image

    for data in (b"\0" * 128 + b"DICM" + os.urandom(200), b"\0" * 128 + b"DICM"):
        with pytest.raises(ImageInputError, match=r"^upload: unreadable DICOM \(") as e:
            decode_image(data, "upload")
        assert "FileDataset" not in str(e.value) and "Error" not in str(e.value) and e.value.status == 400


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    import io

    from domainvlm.inference.image_input import decode_image

    a = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0..65,520
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    for im in (images_mod.load_image(str(p)), decode_image(p.read_bytes())):
        g = np.asarray(im.convert("L")).astype(int)
        assert im.mode == "RGB" and g.min() == 0 and g.max() == 255
        assert (g == 255).mean() < 0.01  # PIL's own conversion left 94% of this image white
        assert np.all(np.diff(g.ravel()) >= 0)  # the order of values is kept
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "PNG")
    assert decode_image(buf.getvalue()).getpixel((0, 0)) == (10, 20, 30)  # 8-bit images unchanged


def test_exif_orientation_is_applied_on_every_path(tmp_path):
    from domainvlm.inference.image_input import decode_image

    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # left half white as stored; orientation 6 (a phone held upright) shows it on top
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    im.save(p, exif=exif, quality=95)
    for got in (images_mod.load_image(str(p)), decode_image(p.read_bytes())):
        g = np.asarray(got.convert("L")).astype(int)
        assert got.size == (20, 40) and g[:20].mean() > 200 and g[20:].mean() < 50
