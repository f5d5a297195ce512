"""Seeded synthetic fab patterns that MixedWM38 does not name, for the taxonomy-extension demo and its tests
(sets of them and their CLI: synth_fab.py).

* ``Reticle-Repeat``: the same die (or small die block) fails in (almost) every reticle shot, so the fails form
  a periodic grid at the reticle pitch (3..8 dies, rows and columns may differ).
* ``Probe-Card``: 1-3 straight full or partial rows (or columns) of failing dies, one die wide (two on large
  maps): a bad probe-card needle or a stepping fault of the prober.
* ``Notch-Cluster``: a dense tongue of failing dies reaching inward from the notch at the bottom of the map
  (maps are normalised to notch-down): deeper than wide, unlike an Edge-Loc arc along the rim.

The makers share synth.py's ``(grid, rng) -> fail mask`` signature; synth.synth_map draws them after the eight
known patterns, so maps of the known patterns alone are unchanged for the same seed. Notch-Cluster is bound to
the notch: augment its maps only by a left-right mirror, never by rotation.
"""

from __future__ import annotations

import numpy as np

FAB_PATTERNS: tuple[str, ...] = ("Reticle-Repeat", "Probe-Card", "Notch-Cluster")
# what a map of a fab pattern may be mixed with (MixedWM38 never mixes Near-full or Random with anything)
MIX_WITH: tuple[str, ...] = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Scratch")


def _reticle_repeat(g, rng):
    r = g[0]
    size = r.shape[0]
    ph, pw = rng.integers(3, max(4, min(8, size // 7)) + 1, 2)  # reticle pitch in dies
    bh, bw = (rng.integers(1, 3, 2) if min(ph, pw) >= 4 else (1, 1))  # failing block inside each reticle
    oy, ox = rng.integers(0, ph), rng.integers(0, pw)  # where the shot grid starts
    dy, dx = rng.integers(0, ph - bh + 1), rng.integers(0, pw - bw + 1)
    ii, jj = np.mgrid[0:size, 0:size]
    ri, rj = (ii + oy) // ph, (jj + ox) // pw
    in_block = (((ii + oy) % ph - dy) % ph < bh) & (((jj + ox) % pw - dx) % pw < bw)
    shot_hit = rng.random((ri.max() + 1, rj.max() + 1)) < rng.uniform(0.8, 1.0)  # a few shots print fine
    return in_block & shot_hit[ri, rj] & (rng.random(r.shape) < rng.uniform(0.9, 1.0)) & (r <= 1)


def _probe_card(g, rng):
    r = g[0]
    size = r.shape[0]
    wafer = r <= 1
    mask = np.zeros(r.shape, dtype=bool)
    width = max(1, round(size / 52))
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(round(0.15 * size), round(0.85 * size)))  # a line with a long chord
        cols = np.flatnonzero(wafer[i])
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        if rng.random() < 0.5:  # partial: a contiguous run of 40-80% of the chord
            n = max(3, round((hi - lo) * rng.uniform(0.4, 0.8)))
            lo = lo + int(rng.integers(0, hi - lo - n + 1))
            hi = lo + n
        mask[i:i + width, lo:hi] = True
    mask &= rng.random(r.shape) < rng.uniform(0.85, 1.0)
    return (mask.T if rng.random() < 0.5 else mask) & wafer  # columns: the same lines transposed


def _notch_cluster(g, rng):
    r, _, y, x = g
    t0 = np.pi / 2 + rng.normal(0, 0.06)  # the notch: bottom of the map (y grows downward)
    ry, rx = rng.uniform(0.3, 0.45), rng.uniform(0.12, 0.22)  # deeper than wide
    cy, cx = np.sin(t0), np.cos(t0)
    tongue = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
    return tongue & (r <= 1) & (rng.random(r.shape) < rng.uniform(0.8, 0.97))


MAKERS = {"Reticle-Repeat": _reticle_repeat, "Probe-Card": _probe_card, "Notch-Cluster": _notch_cluster}
assert tuple(MAKERS) == FAB_PATTERNS
