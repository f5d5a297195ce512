"""The expert's label-keeping training perturbations (map_jitter.py): a shift of a few pixels that never loses a
die, and die-exact pass/fail noise; both off by default, so the recipe's batches stay as they were."""

from __future__ import annotations

import numpy as np
import torch

from domainvlm.domains.wafer.expert_data import MapBank
from domainvlm.domains.wafer.map_jitter import die_noise_batch, random_shift, shift_batch
from domainvlm.domains.wafer.sources import WaferSet
from domainvlm.domains.wafer.synth import synth_map


def _bank(shapes):
    rng = np.random.default_rng(0)
    maps = [synth_map(("Scratch",), s, rng) for s in shapes]
    return MapBank(WaferSet(maps, [("Scratch",)] * len(maps), None, "m", "mixedwm38", "mem"), 224, "cpu", "m")


def test_shift_moves_whole_maps_within_their_margin():
    bank = _bank([52] * 16 + [56, 112])  # 52 dies: 208 px, 8 px margin; 56 and 112 dies fill the 224 canvas
    out = random_shift(bank.canvas, bank.geometry, 3, torch.Generator().manual_seed(0))
    moved = 0
    for b in range(len(bank)):
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.equal(out[b], shift_batch(bank.canvas[b:b + 1], torch.tensor([dy]), torch.tensor([dx]))[0])]
        assert found, b  # a pure translation by at most 3 pixels
        # no die lost: the same pixels of each colour, only elsewhere
        assert torch.equal(torch.bincount(out[b].flatten(), minlength=3), torch.bincount(bank.canvas[b].flatten(),
                                                                                           minlength=3))
        moved += found[0] != (0, 0)
    assert moved >= 12  # 49 offsets each: almost every 52-die map moves
    assert torch.equal(out[-2:], bank.canvas[-2:])  # no margin: never moved


def test_die_noise_flips_whole_dies_between_pass_and_fail_only():
    bank = _bank([52] * 32 + [40])
    out = die_noise_batch(bank.canvas, bank.geometry, 0.2, torch.Generator().manual_seed(0))
    on = bank.canvas > 0
    assert torch.equal(out[~on], bank.canvas[~on])  # off-wafer stays off-wafer, no die appears
    assert set(out[on].unique().tolist()) <= {1, 2}
    flipped = []
    for b in range(len(bank)):
        h, w, k, top, left = (int(x) for x in bank.geometry[b])
        grid, src = out[b, top:top + h * k, left:left + w * k], bank.canvas[b, top:top + h * k, left:left + w * k]
        blocks = grid.reshape(h, k, w, k)
        assert (blocks == blocks[:, :1, :, :1]).all()  # every die one k x k block of one colour
        dies, src_dies = grid[::k, ::k], src[::k, ::k]
        flipped.append(((dies != src_dies).sum() / (src_dies > 0).sum()).item())
    # per-map rate u * 0.2, u uniform: about 0.1 on average, some maps almost untouched
    assert 0.06 < np.mean(flipped) < 0.14 and min(flipped) < 0.03 and max(flipped) < 0.25


def test_off_by_default_and_drawn_only_when_asked():
    """die_noise / shift_px = 0 draw nothing, so the recipe's batches for a seed are the ones it had before."""
    from types import SimpleNamespace

    from domainvlm.domains.wafer.expert_config import ExpertConfig
    from domainvlm.domains.wafer.expert_sample import BatchDraw

    cfg = ExpertConfig()
    assert cfg.shift_px == 0 and cfg.die_noise == 0.0
    mix, wm = _bank([52] * 8), _bank([40] * 8)
    wm.class_weights = lambda alpha: torch.ones(len(wm))
    draw = lambda c, seed: BatchDraw(c, mix, wm)(16, torch.Generator().manual_seed(seed))[0]  # noqa: E731
    base = draw(cfg, 3)
    gen = torch.Generator().manual_seed(3)
    # the same draws as by hand: indices, then the symmetries; nothing in between
    i_mix = torch.randint(0, 8, (8,), generator=gen)
    assert torch.equal(base[:8].sum((1, 2)), mix.canvas[i_mix].sum((1, 2)))
    noisy = draw(SimpleNamespace(**{**vars(cfg), "die_noise": 0.3}), 3)
    shifted = draw(SimpleNamespace(**{**vars(cfg), "shift_px": 3}), 3)
    assert not torch.equal(noisy, base) and not torch.equal(shifted, base)
    assert torch.equal(torch.bincount(shifted.flatten(), minlength=3), torch.bincount(base.flatten(), minlength=3))


def test_train_expert_runs_with_both_perturbations(tmp_path):
    """A few steps of the real recipe with shift_px and die_noise on (their settings are saved with the run)."""
    import json

    from test_train_expert import TINY, _data

    from domainvlm.cli import main

    mixed, wm = _data(tmp_path)
    out = tmp_path / "run"
    assert main(["train-expert", f"mixedwm38={mixed}", f"wm811k={wm}", f"output_dir={out}", "max_steps=3",
                 "warmup_steps=1", "batch_size=8", "eval_at=[1.0]", "shift_px=3", "die_noise=0.05", *TINY]) == 0
    saved = json.loads((out / "model" / "config.json").read_text())
    assert (out / "model" / "model.safetensors").exists() and saved["model_type"] == "qwen2_vl"
    logged = next(line for line in (out / "train_log.txt").read_text().splitlines() if line.startswith("# config "))
    run_cfg = json.loads(logged.removeprefix("# config "))
    assert run_cfg["shift_px"] == 3 and run_cfg["die_noise"] == 0.05
