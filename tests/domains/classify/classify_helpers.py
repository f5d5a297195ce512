"""Tiny generated labelled collections for the classify-domain tests (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TAX_YAML = """name: toy
classes:
  - {name: dots, zh: 点, description: {en: "random dots", zh: "随机点"}}
  - {name: stripes, zh: 条纹, description: {en: "vertical stripes", zh: "竖条纹"}}
"""


def toy_image(kind: str, rng, size: int = 32) -> Image.Image:
    a = rng.integers(0, 120, (size, size), dtype=np.uint8)
    if kind == "stripes":
        a[:, ::4] = 255
    return Image.fromarray(a).convert("RGB")


def image_folder(root: Path, per_class: int = 4, splits=("train", "val"), classes=("dots", "stripes"),
                 size: int = 32, ext: str = "png") -> Path:
    """root/<split>/<class>/<i>.png (splits=None: root/<class>/...)."""
    rng = np.random.default_rng(0)
    for split in (splits or (None,)):
        for c in classes:
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                toy_image(c, rng, size).save(d / f"{c}_{i}.{ext}")
    return root


def taxonomy_file(path: Path, text: str = TAX_YAML) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tiny_head_model(dest: Path, tax) -> Path:
    """A tiny compact model at ``dest`` that answers through the classify head in ``tax``'s classes (untrained:
    its answers are valid lines, not good ones)."""
    import json

    from conftest import TINY

    from domainvlm.domains.classify.instruct import corpus
    from domainvlm.models.compact import CompactConfig, build_compact

    build_compact(dest, corpus(tax) * 3, CompactConfig(**TINY), seed=0)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["domainvlm"].update(answer_head="classify", taxonomy=tax.name)
    (dest / "config.json").write_text(json.dumps(cfg))
    tax.save(dest)
    return dest
