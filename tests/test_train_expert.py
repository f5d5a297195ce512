"""The wafer-expert recipe runs end to end on CPU (tiny model, synthetic MixedWM38- and WM-811K-like files)."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_train_expert_smoke(tmp_path):
    from domainvlm.cli import main
    from domainvlm.data.wafer_sources import WaferSet, save_mixedwm38_npz, save_wm811k_npz
    from domainvlm.data.wafer_synth import synth_map, synth_set
    from domainvlm.models.loader import load_model

    mixed = tmp_path / "mixed.npz"
    save_mixedwm38_npz(synth_set(40, seed=1, split_fracs={"train": 0.7, "val": 0.3}), mixed)
    rng = np.random.default_rng(0)
    types = ["Center", "Edge-Ring", "Scratch", "None"]
    maps, defects, split = [], [], []
    for i in range(24):  # varying shapes, like WM-811K
        t = types[i % 4]
        maps.append(synth_map(() if t == "None" else (t,), int(rng.integers(20, 40)), rng))
        defects.append(() if t == "None" else (t,))
        split.append("val" if i % 3 == 0 else "train")
    wm = tmp_path / "wm.npz"
    save_wm811k_npz(WaferSet(maps, defects, split, "wm811k", "wm811k", str(wm)), wm)
    out = tmp_path / "run"
    tiny = ("compact.vision_dim=32 compact.vision_depth=1 compact.vision_heads=2 compact.hidden=64 compact.layers=1 "
            "compact.heads=2 compact.kv_heads=1 compact.intermediate=128").split()
    assert main(["train-expert", f"mixedwm38={mixed}", f"wm811k={wm}", f"output_dir={out}", "max_steps=3",
                 "batch_size=8", "superpose_frac=0.5", "rotate_frac=0.5", "short_answer_frac=0.5", "length_buckets=4", "warmup_steps=1", "log_every=1", "eval_at=[1.0]", *tiny]) == 0
    sel = json.loads((out / "val_selection.json").read_text())
    assert sel["summary"]["steps"] == 3 and sel["summary"]["best"]["weights"] in ("raw", "ema")
    assert {r["weights"] for r in sel["history"] if "eval_step" in r} == {"raw", "ema"}
    assert "# done" in (out / "train_log.txt").read_text()
    model, _ = load_model(out / "model", device="cpu")
    assert model.config.domainvlm["answer_head"] == "wafer-diagnosis"
