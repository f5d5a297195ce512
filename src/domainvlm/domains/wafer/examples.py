"""Example images for the web UI: a few synthetic wafer maps, rendered once into a cache folder."""

from __future__ import annotations

import os
from pathlib import Path

EXAMPLE_PATTERNS = ("Center", "Donut", "Edge-Ring", "Scratch", ())  # () = a normal wafer


def example_images(cache: str | Path | None = None) -> list[str]:
    import numpy as np

    from ...io import atomic_path
    from .render import render_map
    from .synth import synth_map

    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = Path(cache or cache_home / "domainvlm" / "webui-examples")
    out = []
    for i, pats in enumerate(EXAMPLE_PATTERNS):
        dest = cache / f"{'+'.join(pats) or 'Normal'}.png"
        if not dest.exists():
            img = render_map(synth_map(tuple(pats) if isinstance(pats, tuple) else (pats,), 52,
                                       np.random.default_rng(i)), size=224)
            with atomic_path(dest, suffix=".png") as tmp:
                img.save(tmp, "PNG")
        out.append(str(dest))
    return out
