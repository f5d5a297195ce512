"""Not a wafer map -> the wafer head abstains (out_of_domain) in the question's language; empty and all-fail
grids -> unreadable; real wafer maps pass the check."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from domainvlm.domains.wafer import head as wh
from domainvlm.domains.wafer.input_check import check
from domainvlm.domains.wafer.render import render_map
from domainvlm.inference.assessment import OUT_OF_DOMAIN, UNREADABLE


@pytest.fixture(scope="module")
def engine(tiny_wafer_head_dir):
    """The untrained tiny compact model with the wafer head switched on in its config (tests/conftest.py)."""
    from domainvlm.inference.engine import Engine

    return Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)


def generated_non_maps() -> list[Image.Image]:
    """Noise, blank images, gradients, stripes and a photo-like smooth field (35 images)."""
    rng = np.random.default_rng(0)
    out = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (32, 64, 128, 224, 300)]
    out += [Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).convert("RGB") for _ in range(5)]
    out += [Image.new("RGB", (224, 224), c) for c in ((0, 0, 0), (255, 255, 255), (128, 128, 128), (10, 200, 10),
                                                      (200, 30, 30))]
    x = np.linspace(0, 255, 224)
    for k in range(5):
        g = np.add.outer(x * (k / 4), x * (1 - k / 4)) / 1.0
        out.append(Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)).convert("RGB"))
    for k in range(5):  # a blurred random field: a "photo" of smooth texture
        f = rng.normal(size=(28, 28))
        out.append(Image.fromarray(((f - f.min()) / np.ptp(f) * 255).astype(np.uint8)).resize((224, 224),
                                                                                              Image.BILINEAR).convert("RGB"))
    for k in range(5):  # a centred square block of pass dies: not round
        m = np.zeros((40, 40), np.uint8)
        m[5 + k:35 - k, 5 + k:35 - k] = 1
        m[10, 10] = 2
        out.append(render_map(m, size=224))
    for k in range(5):  # colour noise on a few levels (posterised photo)
        out.append(Image.fromarray((rng.integers(0, 6, (224, 224, 3)) * 51).astype(np.uint8)))
    return out


def real_non_maps(shared) -> list[Image.Image]:
    xr = sorted((shared / "iu-xray-samples" / "images").glob("*.png"))
    steel = sorted((shared / "neu-steel" / "val").glob("*/*.jpg"))[::12]  # 30 photos, every class
    return [Image.open(p).convert("RGB") for p in xr + steel]


def test_generated_non_maps_abstain_in_both_languages(engine):
    imgs = generated_non_maps()
    assert all(check(im) is not None for im in imgs)
    for q, words in (("What defect pattern does this wafer map show?", "does not look like a wafer map"),
                     ("这张晶圆图显示了什么缺陷模式？", "看起来不是晶圆图")):
        got = engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [im]) for im in imgs])
        for a in got:
            assert a.assessment.abstain and a.assessment.reason in (OUT_OF_DOMAIN,), a
            assert words in a and a.assessment.labels == () and a.assessment.confidence is None


def test_radiographs_and_steel_photos_abstain(shared_data, engine):
    imgs = real_non_maps(shared_data) + generated_non_maps()
    assert len(imgs) >= 50
    got = engine.generate([([{"role": "user", "content": "<image>\nWhat defect pattern does this wafer map show?"}],
                            [im]) for im in imgs])
    assert [a.assessment.reason for a in got] == [OUT_OF_DOMAIN] * len(imgs)


def _disc(n=30, r=14):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return yy ** 2 + xx ** 2 < r ** 2


def test_empty_and_all_fail_grids_are_unreadable(engine):
    inside = _disc()
    empty = np.zeros((30, 30), np.uint8)
    fail = np.where(inside, 2, 0).astype(np.uint8)
    ok = np.where(inside, 1, 0).astype(np.uint8)
    assert check(render_map(empty, size=224)) == (UNREADABLE, "no_dies")
    assert check(render_map(fail, size=224)) == (UNREADABLE, "all_fail")
    assert check(render_map(ok, size=224)) is None and check(render_map(ok)) is None  # padded or not
    head = wh.head_for(engine)
    tax = head.tax
    try:  # a taxonomy without an all-fail class (the bundled one has Near-full: the next test)
        head.tax = replace(tax, all_fail=None)
        got = engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [render_map(fail, size=224)])
                               for q in ("Diagnose this wafer map.", "请诊断这张晶圆图。")])
    finally:
        head.tax = tax
    assert all(a.assessment.abstain and a.assessment.reason == UNREADABLE for a in got)
    assert "every die on the map fails" in got[0] and "所有芯片均失效" in got[1]


def test_all_fail_is_a_diagnosis_where_the_taxonomy_names_it(engine):
    """WM-811K labels its all-fail maps Near-full (3 of 12,450 val maps): the bundled taxonomy says so
    (``all_fail``), so they are diagnosed, not turned away."""
    from domainvlm.domains.wafer.batch_load import MapCanvas
    from domainvlm.domains.wafer.taxonomy import default

    fail = np.where(_disc(), 2, 0).astype(np.uint8)
    assert default().all_fail == "Near-full"
    assert check(render_map(fail, size=224), all_fail_ok=True) is None
    assert check(MapCanvas(fail, 224), all_fail_ok=True) is None
    assert check(MapCanvas(fail, 224)) == (UNREADABLE, "all_fail")
    assert check(MapCanvas(np.zeros((30, 30), np.uint8), 224), all_fail_ok=True) == (UNREADABLE, "no_dies")
    assert wh.head_for(engine).tax.all_fail == "Near-full"  # the tiny model has no taxonomy: the default
    got = engine.generate([([{"role": "user", "content": "<image>\nDiagnose this wafer map."}],
                            [render_map(fail, size=224)])])[0]
    assert got.assessment.reason != UNREADABLE and got.assessment.labels


def test_sparse_and_long_outlines_of_real_files_pass():
    """Two WM-811K outlines the check once turned away: a map of only edge and test-site dies (a ring with
    a few inner blocks) and a 2.5:1 outline. A square block is still no wafer."""
    ring = _disc(40, 19.5) & ~_disc(40, 17.5)
    sparse = ring.astype(np.uint8)
    for y, x in ((10, 10), (10, 28), (20, 19), (28, 10), (28, 28)):
        sparse[y:y + 3, x:x + 3] = 1
    sparse[20, 2] = 2
    yy, xx = np.mgrid[:84, :212]
    long_ = (((yy - 41.5) / 42) ** 2 + ((xx - 105.5) / 106) ** 2 < 1).astype(np.uint8)
    long_[40:44, 100:110] = 2
    for m in (sparse, long_):
        assert check(render_map(m, size=224)) is None
    square = np.zeros((40, 40), np.uint8)
    square[5:35, 5:35] = 1
    assert check(render_map(square, size=224)) == (OUT_OF_DOMAIN, "shape")


def test_batch_check_equals_the_check_per_picture():
    """The GPU's batched palette check (run here on CPU tensors) gives check()'s verdict for each picture."""
    import torch

    from domainvlm.domains.wafer.input_check import _exact_palette, _palette_batch
    from domainvlm.domains.wafer.synth import synth_set

    maps = list(synth_set(40, seed=3).maps)
    fail = np.where(_disc(), 2, 0).astype(np.uint8)
    square = np.zeros((40, 40), np.uint8)
    square[5:35, 5:35] = 1
    thin = np.zeros((40, 40), np.uint8)
    thin[18:21, 2:38] = 1
    maps += [fail, np.zeros((30, 30), np.uint8), square, thin, np.where(_disc(), 1, 0).astype(np.uint8)]
    pics = [render_map(m, size=224) for m in maps]
    rgb = torch.from_numpy(np.stack([np.asarray(p) for p in pics]))
    assert all(_exact_palette(rgb))
    for ok in (False, True):
        want = [check(p, all_fail_ok=ok) for p in pics]
        assert _palette_batch(rgb, ok) == want
        assert sum(w is not None for w in want) >= (3 if ok else 4)  # the bad ones are in the set
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    assert _exact_palette(torch.from_numpy(np.array(photo))[None]) == [False]


def test_real_wafer_maps_pass_the_check(shared_data):
    """MixedWM38 and WM-811K val maps drawn as the model sees them: at most 2% turned away (measured over the
    full val sets, all-fail allowed as the bundled taxonomy does: 0 of 5,703 and 0 of 12,450)."""
    from domainvlm.domains.wafer.canvas import canvas_batch, canvas_rgb
    from domainvlm.domains.wafer.sources import load_wafer_file

    for name in ("mixedwm38/mixedwm38_trainval.npz", "wm811k/wm811k_trainval.npz"):
        ws = load_wafer_file(shared_data / name).select("val")
        idx = np.random.default_rng(2).choice(len(ws), size=300, replace=False)
        imgs = [Image.fromarray(a) for a in canvas_rgb(canvas_batch([ws.maps[i] for i in idx]))]
        turned = sum(check(im) is not None for im in imgs)
        assert turned <= 0.02 * len(imgs), (name, turned)


def _drawn_in(m: np.ndarray, colours, k: int = 5) -> Image.Image:
    """A map drawn by another tool: its own three colours (off, pass, fail), k pixels a die."""
    return Image.fromarray(np.array(colours, np.uint8)[m].repeat(k, 0).repeat(k, 1))


OTHER_PALETTES = [((0, 0, 0), (128, 128, 128), (255, 0, 0)), ((0, 0, 0), (200, 200, 200), (255, 0, 0)),
                  ((255, 255, 255), (0, 200, 0), (255, 0, 0)), ((30, 30, 30), (111, 111, 111), (215, 215, 215))]


def test_a_map_in_other_colours_abstains_saying_how_to_give_it(engine):
    """A 52 x 52 map drawn at 260 px in black / grey / red was read by snapping each colour to the nearest
    palette colour (red -> off-wafer, light grey -> fail) and diagnosed with high confidence, yield 0 % or
    100 %. Which colour fails cannot be told without guessing: it abstains, in the question's language, and
    says how to give the map; facts are not made up from it either. Our palette at any size is read as before."""
    from domainvlm.domains.wafer.synth import synth_map

    m = synth_map(("Scratch",), 52, np.random.default_rng(0))
    for cols in OTHER_PALETTES:
        assert check(_drawn_in(m, cols)) == (OUT_OF_DOMAIN, "palette"), cols
    for size in (None, 100, 224, 260, 300, 500):
        assert check(render_map(m, size=size)) is None, size
    img = _drawn_in(m, OTHER_PALETTES[0])
    qs = ("What defect pattern does this wafer map show?", "这张晶圆图显示了什么缺陷模式？",
          "What is the yield?", "良率是多少？")
    got = engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img]) for q in qs])
    for q, a in zip(qs, got):
        assert a.assessment is not None and a.assessment.abstain and a.assessment.reason == OUT_OF_DOMAIN, (q, a)
        assert a.assessment.labels == () and a.assessment.facts == {} and "%" not in a, (q, a)
    assert "not the wafer-map palette" in got[0] and "npz" in got[0] and "render_map" in got[0]
    assert "不是我能读取的晶圆图配色" in got[1] and "npz" in got[1]
    assert "not the wafer-map palette" in got[2] and "不是我能读取的晶圆图配色" in got[3]
