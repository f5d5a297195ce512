"""Superposed MixedWM38 mixtures for the wafer expert: pattern extraction, labels, geometry."""

from __future__ import annotations

import numpy as np
import torch

from domainvlm.domains.wafer.canvas import canvas_batch
from domainvlm.domains.wafer.sources import WaferSet
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.domains.wafer.expert_data import CLASSES, MapBank, Superposer, pattern_only


def test_pattern_only_drops_small_clusters_and_keeps_lines_and_blobs():
    m = np.ones((20, 20), np.uint8)
    m[0, :2] = 0                    # off-wafer corner stays off
    m[3, 3] = 2                     # isolated noise die
    m[17, 2:4] = 2                  # two-die noise cluster
    for i in range(12):             # one-die-wide diagonal scratch (8-connected, 12 dies)
        m[5 + i // 2 + i % 2, 2 + i] = 2
    m[14:18, 14:18] = 2             # 16-die blob
    out = pattern_only(torch.from_numpy(m[None]), min_size=10)[0].numpy()
    assert out[3, 3] == 1 and (out[17, 2:4] == 1).all()
    assert (out[14:18, 14:18] == 2).all() and (out == 2).sum() == 16 + 12
    assert (out[0, :2] == 0).all() and ((out == 0) == (m == 0)).all()


def _bank():
    rng = np.random.default_rng(0)
    kinds = [("Center",), ("Scratch",), ("Loc",), ("Center", "Loc"), ("Edge-Ring",), ()]
    maps = [synth_map(k, 52, rng) for k in kinds for _ in range(3)]
    defects = [k for k in kinds for _ in range(3)]
    ws = WaferSet(maps, defects, None, "mixedwm38", "mixedwm38", "mem")
    return MapBank(ws, 224, "cpu", "mixedwm38"), maps


def test_superposed_mixtures_are_labelled_with_the_union_and_keep_the_outline():
    bank, maps = _bank()
    sup = Superposer(bank, maps)
    names = {CLASSES[int(t)] for t in sup.triples[:, 2]}
    # every target is a union of two disjoint present classes and a MixedWM38 class
    assert {"Center+Scratch", "Center+Loc+Scratch", "Edge-Ring+Loc"} <= names <= set(CLASSES)
    assert "Edge-Ring+Loc+Scratch" not in names  # no present class holds two of its three patterns
    assert all("+" in n for n in names)  # only mixtures are made
    canvas, cls = sup.sample(64, torch.Generator().manual_seed(0), dihedral=False)
    assert canvas.shape == (64, 224, 224)
    for c, k in zip(canvas, cls):
        tr = sup.triples[sup.triples[:, 2] == k]
        assert len(tr)  # a valid decomposition exists
        assert set(CLASSES[int(k)].split("+")) == set(CLASSES[int(tr[0, 0])].split("+")) | set(
            CLASSES[int(tr[0, 1])].split("+"))
    outline = torch.from_numpy(canvas_batch(maps[:1], 224))[0] > 0
    assert ((canvas > 0) == outline).all()  # synth maps share one outline: A's is kept, B adds only fails
    # B contributes its pattern: superposed maps have at least as many fail pixels as their A could alone
    assert (canvas == 2).sum() > 0


def test_superposer_needs_one_map_shape():
    bank, maps = _bank()
    maps = maps[:-1] + [np.ones((30, 30), np.uint8)]
    try:
        Superposer(bank, maps)
    except ValueError as e:
        assert "one shape" in str(e)
    else:
        raise AssertionError("expected ValueError")
