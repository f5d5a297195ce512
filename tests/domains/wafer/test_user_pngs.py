"""Wafer-map PNGs drawn by users' own tools: a transparent off-wafer area, small maps at 1-3 pixels a die, maps
resized by a fraction. Each is read back into its die grid (as the ask CLI loads it) and passes the input
check; pictures that are no map in the palette are still turned away."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from domainvlm.data.images import load_image
from domainvlm.domains.wafer.canvas import canonical_image
from domainvlm.domains.wafer.input_check import check
from domainvlm.domains.wafer.render import _LUT, image_to_map, labels_to_map, palette_index, render_map
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.inference.assessment import OUT_OF_DOMAIN

Q = "What defect pattern does this wafer map show?"


def _crop(g):
    return g[(g > 0).any(1)][:, (g > 0).any(0)]


def _drawn(m, k):
    return _LUT[m.repeat(k, 0).repeat(k, 1)]


def _transparent_off(m, k, under=(0, 0, 0)):
    """RGBA, off-wafer dies transparent; ``under``: the colour a tool leaves below alpha 0 (matplotlib:
    white, numpy / PIL: black)."""
    a = _drawn(m, k).copy()
    off = m.repeat(k, 0).repeat(k, 1) == 0
    a[off] = under
    return Image.fromarray(np.dstack([a, np.where(off, 0, 255).astype(np.uint8)]), "RGBA")


def _read(img):
    """The die grid read from a picture (what canonical_image redraws on the head's canvas)."""
    return labels_to_map(palette_index(img))


def _sees_the_map(img, m) -> bool:
    """The wafer head's canvas of the picture is, pixel for pixel, the canvas the npz path draws for ``m``."""
    return np.array_equal(np.asarray(canonical_image(img)), np.asarray(render_map(m, size=224)))


@pytest.mark.parametrize("under", [(0, 0, 0), (255, 255, 255), (10, 200, 30)])
def test_transparent_off_wafer_is_read_as_off_wafer(tmp_path, under):
    """An RGBA map whose off-wafer area is transparent was turned away ('not the wafer-map palette'): the
    colour under alpha 0 was read. Alpha is composited onto the off-wafer colour, and a PNG loaded as the ask CLI
    loads it (alpha dropped) reads its black / white margin as off-wafer."""
    m = synth_map(("Edge-Ring",), 40, np.random.default_rng(1))
    img = _transparent_off(m, 5, under)
    assert check(img) is None and check(canonical_image(img)) is None
    assert np.array_equal(_read(img), m) and _sees_the_map(img, m)
    if under != (10, 200, 30):  # a dropped alpha: only a margin no wafer colour is near is off-wafer
        img.save(tmp_path / "map.png")
        loaded = load_image(str(tmp_path / "map.png"))
        assert loaded.mode == "RGB" and check(canonical_image(loaded)) is None
        assert np.array_equal(_read(loaded), m) and _sees_the_map(loaded, m)


def test_pictures_that_are_no_palette_map_are_still_turned_away():
    """A margin is made off-wafer only when everything else is in the palette: maps in other colours, photos,
    blank images are turned away as before."""
    m = synth_map(("Scratch",), 52, np.random.default_rng(0))
    grey_red = np.array([(255, 255, 255), (128, 128, 128), (255, 0, 0)], np.uint8)[m].repeat(5, 0).repeat(5, 1)
    assert check(Image.fromarray(grey_red)) == (OUT_OF_DOMAIN, "palette")
    for c in ((0, 0, 0), (255, 255, 255)):
        assert check(Image.new("RGB", (224, 224), c))[0] == OUT_OF_DOMAIN
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    noise[:20], noise[-20:] = 255, 255  # a white margin around a photo
    assert check(Image.fromarray(noise)) == (OUT_OF_DOMAIN, "colours")
    img = Image.fromarray(noise).convert("RGBA")
    assert check(img) == (OUT_OF_DOMAIN, "colours")


def test_flatten_keeps_renders_as_they_are():
    """Renders of ours come back as the same object (no copy: host time per map); alpha is composited."""
    from domainvlm.domains.wafer.render import flatten

    m = synth_map(("Loc",), 30, np.random.default_rng(2))
    img = render_map(m, size=224)
    assert flatten(img) is img
    assert np.array_equal(np.asarray(flatten(_transparent_off(m, 3, (255, 0, 0)))), _drawn(m, 3))


def test_fully_transparent_picture_has_no_dies():
    assert check(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))[1] == "no_dies"


def test_small_wm811k_maps_at_1_to_3_pixels_a_die(shared_data):
    """WM-811K's small maps (25 x 27 dies and the like) drawn at 1, 2, 3 pixels a die (a 26 x 26 px PNG): read
    as their exact die grid and passed, so the head sees the canvas the npz path draws (measured: 5,467 of
    5,470 small maps pass, the rest all-fail or not round, as their npz pictures; 118 of 118 answers equal)."""
    from domainvlm.domains.wafer.sources import cached_wafer_set

    ws = cached_wafer_set(shared_data / "wm811k" / "wm811k_trainval.npz")
    small = [i for i, m in enumerate(ws.maps) if max(m.shape) <= 30 and (ws.maps[i] == 1).any()][::400]
    assert len(small) >= 50
    for k in (1, 2, 3):
        for i in small:
            img = Image.fromarray(_drawn(ws.maps[i], k))
            assert np.array_equal(_read(img), ws.maps[i]) and _sees_the_map(img, ws.maps[i]), (i, k)
            assert check(canonical_image(img)) is None or check(render_map(ws.maps[i], size=224)) is not None


def test_maps_of_one_pixel_dies_are_not_read_on_a_coarser_pitch(shared_data):
    """The fractional-pitch reading must never merge real 1-pixel dies (measured: 0 of all 49,798 WM-811K and
    19,389 MixedWM38 maps at 1 px a die)."""
    from domainvlm.domains.wafer.sources import cached_wafer_set

    for name in ("wm811k/wm811k_trainval.npz", "mixedwm38/mixedwm38_trainval.npz"):
        ws = cached_wafer_set(shared_data / name)
        for m in ws.maps[::25]:
            assert np.array_equal(labels_to_map(m), m)


@pytest.mark.parametrize("k,f", [(4, 1.3), (4, 1.7), (3, 1.5), (2, 1.3), (7, 1.5), (4, 0.8), (1, 1.7), (1, 2.3),
                                 (10, 1.34)])
def test_map_resized_by_a_fraction_reads_its_own_dies(k, f):
    """A render resized by a fraction (nearest-neighbour: die blocks of 5 and 6 pixels) came back as 1-pixel
    dies (thousands of 'dies'). Its die edges fit a fractional pitch; read on it, the map comes back exactly."""
    for seed, cls in enumerate(("Center", "Scratch", "Edge-Loc", "Random")):
        m = synth_map((cls,), 30 + 7 * seed, np.random.default_rng(seed))
        a = Image.fromarray(_drawn(m, k))
        img = a.resize((round(a.width * f), round(a.height * f)), Image.Resampling.NEAREST)
        assert np.array_equal(image_to_map(img), m), (cls, k, f)
        assert _sees_the_map(img, m) and check(canonical_image(img)) is None


def test_resized_224_canvas_and_non_square_resize():
    """A 224 canvas resized to 300 x 300 (a screenshot) and a map stretched unevenly read their dies."""
    from domainvlm.domains.wafer.dies import read_dies

    m = synth_map(("Donut",), 45, np.random.default_rng(3))
    canvas = render_map(m, size=224)
    big = canvas.resize((300, 300), Image.Resampling.NEAREST)
    assert np.array_equal(_crop(image_to_map(big)), _crop(m))
    # the head sees the canvas itself again, not its die grid (padding read as dies) redrawn smaller
    assert np.array_equal(np.asarray(canonical_image(big)), np.asarray(canvas))
    d, grid = read_dies(canonical_image(big)), _read(big)
    assert d.frame == "picture" and d.frame_shape == grid.shape
    assert np.array_equal(grid[d.origin[0]:d.origin[0] + d.grid.shape[0], d.origin[1]:d.origin[1] + d.grid.shape[1]],
                          d.grid)
    a = Image.fromarray(_drawn(m, 4))
    got = image_to_map(a.resize((round(a.width * 1.6), round(a.height * 1.25)), Image.Resampling.NEAREST))
    assert np.array_equal(got, m)


def test_transparent_png_gets_the_answer_of_its_map(tmp_path, tiny_wafer_head_dir):
    """End to end through the engine: the RGBA PNG (as a file, like ask --image) and a resized PNG get the
    answer of the map drawn from data."""
    from domainvlm.inference.engine import Engine

    eng = Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)
    m = synth_map(("Center",), 38, np.random.default_rng(5))
    _transparent_off(m, 5, (255, 255, 255)).save(tmp_path / "rgba.png")
    a = Image.fromarray(_drawn(m, 4))
    a.resize((round(a.width * 1.3), round(a.height * 1.3)), Image.Resampling.NEAREST).save(tmp_path / "scaled.png")
    refs = [render_map(m, size=224), str(tmp_path / "rgba.png"), str(tmp_path / "scaled.png")]
    got = eng.generate([([{"role": "user", "content": f"<image>\n{Q}"}], [r]) for r in refs])
    want = got[0].assessment
    for a in got[1:]:
        assert a.assessment.reason == want.reason and a.assessment.labels == want.labels, a
        assert a.assessment.confidence == pytest.approx(want.confidence, abs=1e-4)
