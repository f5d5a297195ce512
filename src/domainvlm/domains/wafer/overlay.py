"""The evidence drawn over the map: each named pattern's dies tinted in its own colour, its top die boxed, a
legend line per pattern. Returns a PIL image (``ask --evidence-png``, the web UI, the API's base64 field)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

from .dies import read_dies

COLOURS = [(230, 25, 75), (245, 130, 48), (240, 50, 230), (70, 240, 240), (60, 180, 75), (255, 255, 255)]


def evidence_overlay(image, evidence: list[dict], scale: int = 2, lang: str = "en") -> Image.Image:
    """``image``: the canonical map image the head saw; ``evidence``: the head's per-pattern dicts."""
    rgb = image.convert("RGB")
    dies = read_dies(rgb)
    a = (np.asarray(rgb).astype(np.float32) * 0.45).astype(np.uint8)  # dimmed map: the evidence stands out
    base = np.asarray(rgb)
    k = dies.k
    for i, e in enumerate(evidence):
        col = np.array(COLOURS[i % len(COLOURS)], np.float32)
        for r, c in e.get("dies", []):  # the evidence's frame (dies.read_dies: origin) -> pixels of the crop
            y, x = dies.top + (r - dies.origin[0]) * k, dies.left + (c - dies.origin[1]) * k
            a[y:y + k, x:x + k] = (0.35 * base[y:y + k, x:x + k] + 0.65 * col).astype(np.uint8)
    out = Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.Resampling.NEAREST)
    legend = 16 * max(len(evidence), 1) + 6
    canvas = Image.new("RGB", (out.width, out.height + legend), (20, 20, 20))
    canvas.paste(out, (0, 0))
    d = ImageDraw.Draw(canvas)
    for i, e in enumerate(evidence):
        col = COLOURS[i % len(COLOURS)]
        if e.get("top_die"):
            r, c = e["top_die"]
            y, x = (dies.top + (r - dies.origin[0]) * k) * scale, (dies.left + (c - dies.origin[1]) * k) * scale
            d.rectangle([x - 2, y - 2, x + k * scale + 1, y + k * scale + 1], outline=col, width=2)
        text = e.get("text", {}).get("en", e.get("pattern", ""))  # PIL's default font has no CJK glyphs
        d.rectangle([4, out.height + 5 + 16 * i, 14, out.height + 15 + 16 * i], fill=col)
        d.text((20, out.height + 3 + 16 * i), text, fill=(235, 235, 235))
    if not evidence:
        d.text((6, out.height + 3), "no pattern named: nothing to show", fill=(235, 235, 235))
    return canvas


def png_base64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
