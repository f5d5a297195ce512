"""The synthetic fab patterns (synth_fab.py): seeded, the known patterns' maps unchanged, each with its geometry;
the labelled map npz they are stored in."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from domainvlm.domains.wafer import synth_fab
from domainvlm.domains.wafer.synth import _grid, synth_map, synth_set
from domainvlm.errors import UserError

SIZES = (25, 52, 64)


def _mask(name, size, seed):
    return synth_fab.MAKERS[name](_grid(size), np.random.default_rng(seed))


def test_known_patterns_byte_identical_to_before_the_fab_patterns():
    # sha256 of the same calls made with synth.py before synth_fab existed (main at 824b239)
    ws = synth_set(76, size=52, seed=7)
    assert hashlib.sha256(b"".join(m.tobytes() for m in ws.maps)).hexdigest() == \
        "0c23421770719bae059b84eb406dc5e2180570456c2709569e2611844fc759cb"
    rng = np.random.default_rng(11)
    maps = [synth_map(("Center", "Scratch"), s, rng) for s in (16, 25, 40, 64)]
    assert hashlib.sha256(b"".join(m.tobytes() for m in maps)).hexdigest() == \
        "3b560d27535696ce7980c09a9fa50f98f024461bc5cfbf384e72984c933b51e4"


@pytest.mark.parametrize("name", synth_fab.FAB_PATTERNS)
def test_fab_maps_seeded_and_on_the_wafer(name):
    for size in SIZES:
        a = synth_map(("Loc", name), size, np.random.default_rng(3))
        b = synth_map(("Loc", name), size, np.random.default_rng(3))
        assert a.tobytes() == b.tobytes() and a.shape == (size, size) and a.dtype == np.uint8
        assert a.tobytes() != synth_map(("Loc", name), size, np.random.default_rng(4)).tobytes()
        off = _grid(size)[0] > 1
        assert (a[off] == 0).all() and (a[~off] > 0).all()  # fails only on the wafer
        assert (_mask(name, size, 5) & off).sum() == 0


def _periodic_share(m, pitch, axis):
    """Share of fail dies whose die one pitch further along ``axis`` also fails."""
    shifted = np.roll(m, -pitch, axis=axis)
    valid = np.ones_like(m)
    if axis == 0:
        valid[-pitch:] = False
    else:
        valid[:, -pitch:] = False
    return (m & shifted & valid).sum() / max(1, (m & valid).sum())


def test_reticle_repeat_is_a_periodic_grid():
    for size in SIZES:
        for seed in range(6):
            m = _mask("Reticle-Repeat", size, seed)
            best = [max(_periodic_share(m, p, ax) for p in range(3, 9)) for ax in (0, 1)]
            assert min(best) > 0.5, (size, seed, best)
            assert m.sum() > 0.01 * (_grid(size)[0] <= 1).sum()  # one die per shot at least, over the wafer


def test_probe_card_is_straight_rows_or_columns():
    for size in SIZES:
        width = max(1, round(size / 52))
        for seed in range(8):
            m = _mask("Probe-Card", size, seed)
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            assert min(len(rows), len(cols)) <= 3 * width, (size, seed)  # at most three lines ...
            line = m[rows] if len(rows) <= len(cols) else m[:, cols].T
            assert max(line.sum(1)) >= 3  # ... each a run of dies along one axis


def test_notch_cluster_sits_at_the_bottom_centre():
    for size in SIZES:
        _, _, y, x = _grid(size)
        for seed in range(8):
            m = _mask("Notch-Cluster", size, seed)
            assert m.sum() >= 3
            assert y[m].min() > 0.4 and abs(x[m].mean()) < 0.2, (size, seed)  # lower rim, near the notch


def test_fab_set_classes_sizes_and_mixtures():
    ws = synth_fab.synth_fab_set(20, seed=1, negatives=10)
    assert len(ws) == 70
    for name in synth_fab.FAB_PATTERNS:
        sets = [d for d in ws.defects if name in d]
        assert len(sets) == 20 and 3 <= sum(len(d) == 2 for d in sets) <= 17  # alone and mixed
        assert all(d[0] in synth_fab.MIX_WITH for d in sets if len(d) == 2)
    assert sum(not set(d) & set(synth_fab.FAB_PATTERNS) for d in ws.defects) == 10
    sizes = {m.shape[0] for m in ws.maps}
    assert 52 in sizes and len(sizes) > 5 and min(sizes) >= 25 and max(sizes) <= 64
    again = synth_fab.synth_fab_set(20, seed=1, negatives=10)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ws.maps, again.maps)) and ws.defects == again.defects


def test_labelled_npz_round_trip_and_bad_labels(tmp_path):
    from domainvlm.domains.wafer.labelled import load_labelled_npz, save_labelled_npz
    from domainvlm.domains.wafer.taxonomy import default
    from domainvlm.taxonomy import extend

    root = __import__("pathlib").Path(__file__).resolve().parents[3]
    tax = extend(default(), root / "configs" / "fab-patterns.yaml")
    ws = synth_fab.synth_fab_set(4, seed=2, negatives=3)
    p = tmp_path / "fab.npz"
    save_labelled_npz(ws, p)
    back = load_labelled_npz(p, tax)
    assert back.defects == [tax.canonical(d) for d in ws.defects] and back.taxonomy == "custom"
    assert all(np.array_equal(a, b) for a, b in zip(ws.maps, back.maps))
    with pytest.raises(UserError, match=r"fab\.npz: key 'labels': map \d+: unknown class 'Reticle-Repeat'"):
        load_labelled_npz(p, default())
    with pytest.raises(UserError, match="key 'shapes' missing"):
        np.savez(tmp_path / "bad.npz", maps_flat=np.zeros(4, np.uint8))
        load_labelled_npz(tmp_path / "bad.npz", tax)
