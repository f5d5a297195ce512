"""Free rotations of wafer maps for the expert's training: die-exact, label-preserving geometry."""

from __future__ import annotations

import numpy as np
import torch

from domainvlm.domains.wafer.canvas import canvas_batch
from domainvlm.domains.wafer.sources import WaferSet
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.domains.wafer.expert_data import MapBank, augment_batch, dihedral_batch, rotate_batch


def _bank(shapes):
    rng = np.random.default_rng(0)
    maps = [synth_map(("Scratch",), s, rng) for s in shapes]
    return MapBank(WaferSet(maps, [("Scratch",)] * len(maps), None, "m", "mixedwm38", "mem"), 224, "cpu", "m"), maps


def test_quarter_turns_of_square_maps_equal_the_dihedral_ones():
    bank, _ = _bank([52, 52, 30])
    n = len(bank)
    zero = torch.zeros(n, dtype=torch.bool)
    assert torch.equal(rotate_batch(bank.canvas, bank.geometry, torch.zeros(n), zero), bank.canvas)
    r90 = rotate_batch(bank.canvas, bank.geometry, torch.full((n,), np.pi / 2), zero)
    assert torch.equal(r90, dihedral_batch(bank.canvas, torch.full((n,), 3)))
    mirrored = rotate_batch(bank.canvas, bank.geometry, torch.zeros(n), ~zero)
    assert torch.equal(mirrored, dihedral_batch(bank.canvas, torch.full((n,), 4)))


def test_free_rotation_keeps_die_blocks_palette_and_footprint():
    bank, maps = _bank([52, 40])
    out = rotate_batch(bank.canvas, bank.geometry, torch.tensor([0.7, 2.1]), torch.tensor([False, True]))
    for b, m in enumerate(maps):
        h, w, k, top, left = (int(x) for x in bank.geometry[b])
        grid = out[b, top:top + h * k, left:left + w * k]
        dies = grid[::k, ::k]
        # every die is one k x k block of one colour: the canvas is exactly the render of the rotated grid
        assert torch.equal(torch.from_numpy(canvas_batch([dies.numpy()], 224)[0]), out[b])
        assert set(out[b].unique().tolist()) <= {0, 1, 2}
        assert (out[b] == 0).sum() >= (bank.canvas[b] == 0).sum() * 0.9  # off-wafer stays off, roughly
        src_fail, new_fail = int((torch.from_numpy(m) == 2).sum()), int((dies == 2).sum())
        assert abs(new_fail - src_fail) <= 0.15 * src_fail + 5  # nearest-die rotation neither loses nor invents


def test_augment_batch_mixes_free_and_dihedral_transforms():
    bank, _ = _bank([52] * 64)
    gen = torch.Generator().manual_seed(0)
    only_dihedral = augment_batch(bank.canvas, bank.geometry, 0.0, gen)
    for b in range(len(bank)):
        assert any(torch.equal(only_dihedral[b], dihedral_batch(bank.canvas[b:b + 1], torch.tensor([t]))[0])
                   for t in range(8))
    mixed = augment_batch(bank.canvas, bank.geometry, 0.5, torch.Generator().manual_seed(1))
    free = sum(not any(torch.equal(mixed[b], dihedral_batch(bank.canvas[b:b + 1], torch.tensor([t]))[0])
                       for t in range(8)) for b in range(len(bank)))
    assert 15 <= free <= 49  # about half of them turned by a free angle


def test_short_answer_twins_end_after_the_diagnosis_line():
    from domainvlm.domains.wafer import knowledge as wk
    from domainvlm.domains.wafer.patterns import canonical_set
    from domainvlm.models.loader import load_model
    from domainvlm.domains.wafer.expert_data import CLASSES, LANGS, Templates

    _, proc = load_model(None, device="cpu")  # the bundled expert's tokenizer and processor
    t = Templates(proc, 5, 224, "cpu")
    tok = proc.tokenizer
    short = [i for i, k in enumerate(t.kind) if k == "short"]
    assert len(short) == t.diag.numel()
    for c in (0, 7, len(CLASSES) - 1):
        for li, lang in enumerate(LANGS):
            full, twin = int(t.diag[c, li, 0]), int(t.short_of[t.diag[c, li, 0]])
            n = int(t.length[twin])
            assert t.kind[twin] == "short" and n < int(t.length[full])
            assert torch.equal(t.ids[twin, :n], t.ids[full, :n]) and torch.equal(t.labels[twin, :n], t.labels[full, :n])
            answer = tok.decode(t.ids[twin, :n][t.labels[twin, :n] != -100].tolist())
            first_line = wk.answer(canonical_set(CLASSES[c].split("+")), lang, True).split("\n")[0]
            assert answer.strip() == first_line
    gen = torch.Generator().manual_seed(0)
    cls = torch.zeros(400, dtype=torch.long)
    picked = t.sample(cls, 0.0, 0.0, gen, short_frac=0.75)
    frac = sum(t.kind[i] == "short" for i in picked.tolist()) / len(picked)
    assert 0.65 < frac < 0.85
    assert all(t.kind[i] == "diag" for i in t.sample(cls, 0.0, 0.0, gen).tolist())
