"""Seeded synthetic wafer maps that mimic the MixedWM38 / WM-811K failure patterns.

Used by tests and for augmentation, so two properties matter more than realism in detail: the same seed gives
byte-identical output, and each pattern has a geometry a small model can tell apart from the others (Center
sits at the centre, Loc away from centre and edge, Edge-Loc on part of the rim, Edge-Ring on all of it, ...).
Mixtures are the union of the singles' fail regions, as in MixedWM38.
"""

from __future__ import annotations

import numpy as np

from ...errors import UserError
from .patterns import PATTERNS, canonical_set, mixedwm38_classes
from .npz_writers import save_mixedwm38_npz
from .sources import WaferSet
from .fab_patterns import FAB_PATTERNS, MAKERS as FAB_MAKERS

__all__ = ["synth_map", "synth_map_with_masks", "synth_set", "save_mixedwm38_npz"]

MIN_SIZE = 16


def _grid(size: int):
    """Normalised polar coordinates of every die: r = 1 on the wafer rim, theta in (-pi, pi]."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - c, xx - c
    radius = size / 2 - 0.25  # keeps a thin off-wafer margin in the corners, like the real maps
    return np.hypot(dy, dx) / radius, np.arctan2(dy, dx), dy / radius, dx / radius


def _dense(region: np.ndarray, rng, lo=0.75, hi=0.95) -> np.ndarray:
    """Fail most (not all) dies of a region: real clusters have holes."""
    return region & (rng.random(region.shape) < rng.uniform(lo, hi))


def _center(g, rng):
    _, _, y, x = g
    oy, ox = rng.normal(0, 0.04, 2)
    return _dense(np.hypot(y - oy, x - ox) < rng.uniform(0.16, 0.35), rng)


def _donut(g, rng):
    r = g[0]
    r0 = rng.uniform(0.22, 0.38)
    return _dense((r > r0) & (r < r0 + rng.uniform(0.15, 0.25)), rng)


def _edge_loc(g, rng):
    r, t = g[0], g[1]
    t0, half = rng.uniform(-np.pi, np.pi), rng.uniform(0.35, 0.8)
    dt = np.abs(np.angle(np.exp(1j * (t - t0))))  # angular distance, wraps around pi
    depth = rng.uniform(0.18, 0.32) * (1 - (dt / half) ** 4)  # deepest in the middle of the arc
    return _dense((r <= 1) & (dt < half) & (r > 1 - depth), rng)


def _edge_ring(g, rng):
    r = g[0]
    width = max(rng.uniform(0.05, 0.12), 3 / r.shape[0])  # at least ~1.5 dies wide on small maps
    return _dense((r <= 1) & (r > 1 - width), rng, 0.8, 0.97)


def _loc(g, rng):
    _, _, y, x = g
    rc, tc = rng.uniform(0.35, 0.65), rng.uniform(-np.pi, np.pi)
    cy, cx = rc * np.sin(tc), rc * np.cos(tc)
    ay, ax = rng.uniform(0.12, 0.2, 2)  # slightly elliptic blob
    return _dense(((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 < 1, rng)


def _near_full(g, rng):
    return (g[0] <= 1) & (rng.random(g[0].shape) < rng.uniform(0.8, 0.97))


def _scratch(g, rng):
    """A long thin, gently curved line: step along a random heading, turning a little each step."""
    r = g[0]
    size = r.shape[0]
    mask = np.zeros(r.shape, dtype=bool)
    c, rad = (size - 1) / 2, size / 2
    a0 = rng.uniform(-np.pi, np.pi)
    p = c + rng.uniform(0.0, 0.6) * rad * np.array([np.sin(a0), np.cos(a0)])
    heading, turn = rng.uniform(-np.pi, np.pi), rng.uniform(-0.03, 0.03) * 52 / size  # same arc at any size
    width = max(1, round(size / 52))  # one die wide at MixedWM38 resolution
    for _ in range(int(rng.uniform(0.6, 1.1) * size * 2)):  # half-die steps leave no gaps
        iy, ix = int(round(p[0])), int(round(p[1]))
        if 0 <= iy < size and 0 <= ix < size:
            mask[iy:iy + width, ix:ix + width] = True
        heading += turn
        p = p + 0.5 * np.array([np.sin(heading), np.cos(heading)])
    return mask & (r <= 1)


def _random(g, rng):
    return (g[0] <= 1) & (rng.random(g[0].shape) < rng.uniform(0.35, 0.6))


_MAKERS = {"Center": _center, "Donut": _donut, "Edge-Loc": _edge_loc, "Edge-Ring": _edge_ring, "Loc": _loc,
           "Near-full": _near_full, "Scratch": _scratch, "Random": _random}
assert set(_MAKERS) == set(PATTERNS)


def synth_map(defects: tuple[str, ...] = (), size: int = 52, rng: np.random.Generator | None = None) -> np.ndarray:
    """One map (uint8, 0 off-wafer / 1 pass / 2 fail) showing the union of ``defects`` (() = Normal); the fab
    patterns of fab_patterns.py (Reticle-Repeat, Probe-Card, Notch-Cluster) are drawn too."""
    return synth_map_with_masks(defects, size, rng)[0]


def synth_map_with_masks(defects: tuple[str, ...] = (), size: int = 52, rng: np.random.Generator | None = None
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`synth_map` (the same map for the same ``rng`` state) and, per pattern, the bool mask of the dies
    it placed: the ground truth of where each pattern is (evidence benchmarks)."""
    if size < MIN_SIZE:
        raise UserError(f"wafer map size must be at least {MIN_SIZE}, got {size}")
    rng = rng if rng is not None else np.random.default_rng(0)
    g = _grid(size)
    wafer = g[0] <= 1
    # Sparse background noise: real Normal maps average ~8% failing dies; kept lower so thin Scratch lines and
    # small Loc blobs stay learnable from few examples.
    fail = rng.random(wafer.shape) < rng.uniform(0.0, 0.06)
    masks = {}
    for name in canonical_set(n for n in defects if n not in FAB_MAKERS):
        masks[name] = _MAKERS[name](g, rng) & wafer
        fail |= masks[name]
    for name in (n for n in FAB_PATTERNS if n in defects):  # fab patterns (fab_patterns.py) after the known ones
        masks[name] = FAB_MAKERS[name](g, rng) & wafer
        fail |= masks[name]
    m = wafer.astype(np.uint8)
    m[wafer & fail] = 2
    return m, masks


def _parse_class(name: str) -> tuple[str, ...]:
    try:
        return canonical_set(name.split("+"))
    except ValueError as e:
        raise UserError(f"synthetic class {name!r}: {e}") from None


def _split_plan(split_fracs) -> list[tuple[str, float]]:
    items = list(split_fracs.items()) if isinstance(split_fracs, dict) else [tuple(x) for x in split_fracs]
    if not items or any(f < 0 for _, f in items) or sum(f for _, f in items) <= 0:
        raise UserError(f"split fractions must be non-negative and not all zero, got {split_fracs!r}")
    total = sum(f for _, f in items)
    return [(str(s), f / total) for s, f in items]


def synth_set(n: int, size: int = 52, seed: int = 0, classes: list[str] | None = None,
              split_fracs=None) -> WaferSet:
    """``n`` maps balanced over ``classes`` (default: the 38 MixedWM38 classes), in shuffled order.

    ``split_fracs`` like ``{"train": 0.8, "val": 0.2}`` assigns splits stratified per class; None = no split.
    """
    classes = list(classes) if classes is not None else mixedwm38_classes()
    if not classes:
        raise UserError("synthetic set needs at least one class")
    sets = [_parse_class(c) for c in classes]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(sets))
    maps = [synth_map(sets[k], size, rng) for k in labels.tolist()]
    split = None
    if split_fracs is not None:
        plan = _split_plan(split_fracs)
        split = [""] * n
        for k in range(len(sets)):  # stratify: every class gets the same proportions
            idx = np.flatnonzero(labels == k)
            cuts = np.round(np.cumsum([f for _, f in plan]) * len(idx)).astype(int)
            for (name, _), lo, hi in zip(plan, np.concatenate([[0], cuts[:-1]]), cuts):
                for i in idx[lo:hi].tolist():
                    split[i] = name
    return WaferSet(maps, [sets[k] for k in labels.tolist()], split, "synthetic", "mixedwm38",
                    f"<synthetic seed={seed} size={size}>")
