"""Synthetic wafer maps (determinism, geometry, learnability) and palette rendering (exact round trips)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from domainvlm.domains.wafer.render import PALETTE, image_to_map, render_map
from domainvlm.domains.wafer.sources import load_wafer_file
from domainvlm.domains.wafer.synth import save_mixedwm38_npz, synth_map, synth_set
from domainvlm.domains.wafer.patterns import PATTERNS, mixedwm38_classes
from domainvlm.errors import UserError

# ------------------------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("size", [16, 25, 52, 64])
def test_synth_map_is_a_wafer(size):
    m = synth_map(("Center", "Scratch"), size, np.random.default_rng(0))
    assert m.shape == (size, size) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1, 2}
    assert m[0, 0] == m[0, -1] == m[-1, 0] == m[-1, -1] == 0  # round disk, off-wafer corners
    assert (m > 0).mean() > 0.7 and m[size // 2, size // 2] > 0


def test_synth_deterministic_and_balanced():
    a, b = synth_set(76, seed=3), synth_set(76, seed=3)
    assert a.defects == b.defects and all(np.array_equal(x, y) for x, y in zip(a.maps, b.maps))
    c = synth_set(76, seed=4)
    assert not all(np.array_equal(x, y) for x, y in zip(a.maps, c.maps))
    assert (a.source, a.taxonomy, a.split) == ("synthetic", "mixedwm38", None)
    counts = Counter(a.class_name(i) for i in range(len(a)))
    assert set(counts) == set(mixedwm38_classes()) and set(counts.values()) == {2}
    assert np.array_equal(synth_map(("Loc",), 30, np.random.default_rng(9)),
                          synth_map(("Loc",), 30, np.random.default_rng(9)))


def test_synth_splits_and_errors():
    ws = synth_set(100, seed=0, classes=["Normal", "Center", "Donut+Scratch", "Random"],
                   split_fracs={"train": 0.8, "val": 0.2})
    per = Counter((ws.class_name(i), ws.split[i]) for i in range(len(ws)))
    assert all(per[(c, "train")] == 20 and per[(c, "val")] == 5 for c in ("Normal", "Center", "Donut+Scratch"))
    assert len(ws.select("val")) == 20
    with pytest.raises(UserError, match="Blob"):
        synth_set(4, classes=["Center+Blob"])
    with pytest.raises(UserError, match="at least 16"):
        synth_map((), 15, np.random.default_rng(0))


def _profile(maps, rbins):
    """Fail density per radial band (r normalised to the rim), averaged over maps."""
    size = maps[0].shape[0]
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2) / (size / 2)
    a = np.stack(maps)
    return [((a == 2) & ((r >= lo) & (r < hi))[None]).sum() / ((a > 0) & ((r >= lo) & (r < hi))[None]).sum()
            for lo, hi in rbins]


def test_synth_pattern_geometry():
    bands = [(0, 0.15), (0.3, 0.5), (0.93, 1.01)]  # centre, middle ring, rim

    def prof(*defects):
        return _profile(synth_set(20, seed=1, classes=["+".join(defects) or "Normal"]).maps, bands)

    normal, center, donut, ring = prof(), prof("Center"), prof("Donut"), prof("Edge-Ring")
    assert max(normal) < 0.08
    assert center[0] > 0.6 and center[2] < 0.1
    assert donut[1] > 0.35 and donut[1] > 2 * donut[0] and donut[2] < 0.1
    assert ring[2] > 0.6 and ring[0] < 0.1
    mix = prof("Center", "Edge-Ring")  # mixtures overlay the singles
    assert mix[0] > 0.6 and mix[2] > 0.6 and mix[1] < 0.15
    full = np.stack(synth_set(10, classes=["Near-full"]).maps)
    rand = np.stack(synth_set(10, classes=["Random"]).maps)
    assert (full == 2).sum() / (full > 0).sum() > 0.75 and 0.3 < (rand == 2).sum() / (rand > 0).sum() < 0.7
    # Edge-Loc: dense on one part of the rim only
    for m in synth_set(5, seed=2, classes=["Edge-Loc"]).maps:
        yy, xx = np.nonzero(m == 2)
        theta = np.arctan2(yy - 25.5, xx - 25.5)
        hist = np.histogram(theta, bins=8, range=(-np.pi, np.pi))[0]
        assert hist.max() > 4 * max(hist.min(), 1)


def test_synth_patterns_are_learnable():
    """A tiny CNN tells Normal and the 8 single patterns apart from 50 examples each, in a few seconds."""
    torch = pytest.importorskip("torch")
    classes = ["Normal", *PATTERNS]

    def tensors(ws):
        a = np.stack(ws.maps)
        yy, xx = np.mgrid[:52, :52]
        r = np.broadcast_to(np.hypot(yy - 25.5, xx - 25.5) / 26, a.shape)  # position: Center vs Loc vs Edge
        x = torch.tensor(np.stack([a == 2, a > 0, r], 1).astype(np.float32))
        return x, torch.tensor([classes.index(ws.class_name(i)) for i in range(len(ws))])

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: extra threads only spin-wait when the machine is busy (10x slower)
    try:
        acc = _train_tiny_cnn(torch, tensors(synth_set(450, seed=1, classes=classes)),
                              tensors(synth_set(270, seed=2, classes=classes)))
    finally:
        torch.set_num_threads(threads)
    assert acc > 0.85, acc


def _train_tiny_cnn(torch, train, test):
    (x, y), (xt, yt) = train, test
    nn = torch.nn

    def block(i, o):  # BatchNorm: without it some seeds stall (0.70 vs >= 0.90 over 10 seeds with it)
        return [nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU()]

    net = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                        nn.Linear(32, 9))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(15):
        for b in torch.randperm(len(x)).split(32):
            loss = nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return (net(xt).argmax(1) == yt).float().mean().item()


def test_synth_save_roundtrip(tmp_path):
    ws = synth_set(40, size=32, seed=5, split_fracs={"train": 3, "val": 1})
    save_mixedwm38_npz(ws, tmp_path / "syn.npz")
    back = load_wafer_file(tmp_path / "syn.npz")
    assert back.source == "mixedwm38" and back.defects == ws.defects and back.split == ws.split
    assert all(np.array_equal(a, b) for a, b in zip(back.maps, ws.maps))


# ------------------------------------------------------------------------------------------------- rendering

def _colours(img):
    return {tuple(c) for c in np.asarray(img).reshape(-1, 3).tolist()}


def test_palette_distinct():
    assert set(PALETTE) == {0, 1, 2}
    cols = [np.array(PALETTE[i]) for i in range(3)]
    assert min(np.abs(cols[i] - cols[j]).sum() for i in range(3) for j in range(i + 1, 3)) > 150


@pytest.mark.parametrize("shape", [(25, 27), (52, 52), (27, 25), (1, 1), (3, 200)])
def test_render_roundtrip(shape, tmp_path):
    m = np.random.default_rng(sum(shape)).integers(0, 3, shape).astype(np.uint8)
    img = render_map(m)
    assert img.mode == "RGB" and _colours(img) <= set(PALETTE.values())
    k = img.width // shape[1]
    assert img.size == (shape[1] * k, shape[0] * k)
    blocks = np.asarray(img).reshape(shape[0], k, shape[1], k, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # every die is a block of identical pixels
    assert np.array_equal(image_to_map(img, grid=shape), m)
    if min(shape) > 1:
        assert np.array_equal(image_to_map(img), m)  # die size inferred from the image alone
    img.save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as back:
        assert np.array_equal(image_to_map(back, grid=shape), m)
    for size in (224, 100, 53):
        sq = render_map(m, size=size)
        assert sq.size == (size, size) and _colours(sq) <= set(PALETTE.values())
        if size >= max(shape):
            assert np.array_equal(image_to_map(sq, grid=shape), m)
            if size % max(shape):  # leftover pixels are padded with the off-wafer colour
                assert sq.getpixel((size - 1, size - 1)) == PALETTE[0]


def test_render_real_shapes_and_errors():
    m = synth_map(("Donut",), 52, np.random.default_rng(1))
    assert np.array_equal(image_to_map(render_map(m, size=448), grid=m.shape), m)
    small = render_map(np.ones((60, 60), np.uint8), size=32)  # smaller than the map: sampled, still palette
    assert small.size == (32, 32) and _colours(small) == {PALETTE[1]}
    with pytest.raises(UserError, match="0 \\(off-wafer\\)"):
        render_map(np.full((4, 4), 3))
    with pytest.raises(UserError, match="2-D"):
        render_map(np.ones(5))
    with pytest.raises(UserError, match="does not match"):
        image_to_map(render_map(np.ones((5, 7), np.uint8)), grid=(6, 7))


@pytest.mark.parametrize("offset", [(20, 17), (3, 1), (0, 9)])
def test_map_pasted_off_the_die_grid_reads_its_own_dies(offset):
    """A render pasted at a margin that is no multiple of its die size came back as 1-pixel dies: 28,272 'dies'
    for a wafer of 1,264, stated with full confidence."""
    from domainvlm.domains.wafer.canvas import canonical_image
    from domainvlm.domains.wafer.dies import read_dies

    m = synth_map(("Center",), 40, np.random.default_rng(4))
    img = render_map(m)
    canvas = Image.new("RGB", (img.width + 37, img.height + 37), PALETTE[0])
    canvas.paste(img, offset)
    got = image_to_map(canvas)
    crop = lambda g: g[(g > 0).any(1)][:, (g > 0).any(0)]  # noqa: E731
    assert np.array_equal(crop(got), crop(m))
    dies = read_dies(canonical_image(canvas))
    assert int((dies.grid > 0).sum()) == int((m > 0).sum()) and int((dies.grid == 2).sum()) == int((m == 2).sum())
