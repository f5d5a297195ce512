"""Maps for ``domainvlm bench`` (the generic timing loops are in :mod:`domainvlm.inference.bench`)."""

from __future__ import annotations

import numpy as np


def bench_images(n: int, source: str | None = None, seed: int = 0):
    """``n`` canvas images: maps of ``source`` (val split if it has one) or synthetic MixedWM38-like maps."""
    from PIL import Image

    from .canvas import canvas_batch, canvas_rgb

    if source:
        from .sources import load_wafer_file

        ws = load_wafer_file(source)
        if ws.split is not None and "val" in ws.splits():
            ws = ws.select("val")
        idx = np.random.default_rng(seed).choice(len(ws), size=min(n, len(ws)), replace=False)
        maps = [ws.maps[i] for i in idx]
    else:
        from .synth import synth_set

        maps = synth_set(n, seed=seed).maps
    return [Image.fromarray(a) for a in canvas_rgb(canvas_batch(maps))]
