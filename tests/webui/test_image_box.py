"""The web UI's image box decodes uploads with domainvlm's reader: a bad file is one line naming the upload
(no traceback, no server temp path), a pixel bomb is refused from its header, a good file is an RGB image."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from domainvlm.webui.image_box import ImageBox  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # the image helpers' folder
from test_serve_engine import bomb_png  # noqa: E402 - shared bad-image builders


def _payload(path, name):
    from gradio.data_classes import ImageData

    return ImageData(path=str(path), orig_name=name)


def test_upload_errors_are_one_line_naming_the_upload(tmp_path):
    box = ImageBox(type="pil")
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 30)).save(buf, "PNG")
    good = buf.getvalue()
    cases = {"text.png": (b"not an image", "text.png: not a recognised image format"),
             "half.png": (good[: len(good) // 2], "half.png: corrupt or truncated image"),
             "empty.png": (b"", "empty.png: empty image data"),
             "bomb.png": (bomb_png(), "bomb.png: image has 400,000,000 pixels, over the limit")}
    for name, (data, msg) in cases.items():
        stored = tmp_path / "gradio-tmp" / name
        stored.parent.mkdir(exist_ok=True)
        stored.write_bytes(data)
        with pytest.raises(gr.Error) as e:
            box.preprocess(_payload(stored, name))
        assert str(e.value.message).startswith(msg) and "gradio-tmp" not in e.value.message
        assert "\n" not in e.value.message and e.value.print_exception is False
    (tmp_path / "ok.png").write_bytes(good)
    im = box.preprocess(_payload(tmp_path / "ok.png", "ok.png"))
    assert im.mode == "RGB" and im.size == (30, 20)
    assert box.get_block_name() == "image"  # gradio's own front-end component renders it


def test_upload_size_limit_is_the_boxs_own(tmp_path):
    """webui --max-upload-mb sets it: a full-size DR DICOM (20-30 MB) must be accepted when the user asks."""
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 30)).save(buf, "PNG")
    (tmp_path / "ok.png").write_bytes(buf.getvalue())
    box = ImageBox(type="pil")
    assert box.preprocess(_payload(tmp_path / "ok.png", "ok.png")).size == (30, 20)  # under the 20 MB default
    box.max_upload_bytes = len(buf.getvalue()) - 1
    with pytest.raises(gr.Error) as e:
        box.preprocess(_payload(tmp_path / "ok.png", "ok.png"))
    assert e.value.message.startswith("ok.png: file over ") and "--max-upload-mb" in e.value.message
