"""The taxonomy-extension levers against forgetting: train only the LM's last layers (train_lm_layers) and a
selection score that penalises an old-class drop beyond a limit (select_penalty, select_drop_limit)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from domainvlm.domains.wafer.expert_extend import freeze_lm_layers, penalised


def _res(mix_em, wm_em, score):
    return {"mixedwm38": {"exact_match": mix_em}, "wm811k": {"exact_match": wm_em}, "score": score}


def test_penalty_only_beyond_the_limit_and_off_by_default():
    base = _res(0.98, 0.90, 0.0)
    on = SimpleNamespace(select_penalty=2.0, select_drop_limit=0.3)
    off = SimpleNamespace(select_penalty=0.0, select_drop_limit=0.3)
    within = _res(0.978, 0.899, 0.9)  # drops 0.2 and 0.1 points: no penalty
    assert penalised(within, base, on)["score"] == pytest.approx(0.9)
    worse = _res(0.97, 0.89, 0.9)  # drops 1.0 and 1.0 points: 0.7 + 0.7 beyond the limit
    got = penalised(worse, base, on)
    assert got["score"] == pytest.approx(0.9 - 2.0 * 1.4 / 100) and got["score_unpenalised"] == 0.9
    assert penalised(worse, base, off) == worse and penalised(worse, None, on) == worse
    # a model that learnt the new classes a little less but kept the old ones now wins the selection
    keeps, forgets = _res(0.98, 0.90, 0.90), _res(0.95, 0.87, 0.92)
    assert penalised(keeps, base, on)["score"] > penalised(forgets, base, on)["score"]
    assert keeps["score"] < forgets["score"]


def test_train_lm_layers_freezes_all_but_the_last(tmp_path):
    from conftest import build_tiny_compact
    from domainvlm.models.loader import load_model

    build_tiny_compact(tmp_path / "m")
    model, _ = load_model(tmp_path / "m", device="cpu", dtype="float32")
    lm = model.model.language_model
    freeze_lm_layers(model, 0)
    assert all(p.requires_grad for p in lm.parameters())
    freeze_lm_layers(model, 1)
    assert not lm.embed_tokens.weight.requires_grad
    assert all(not p.requires_grad for layer in lm.layers[:-1] for p in layer.parameters())
    assert all(p.requires_grad for p in lm.layers[-1].parameters()) and lm.norm.weight.requires_grad


@pytest.mark.slow
def test_penalised_selection_end_to_end(tmp_path):
    """A run with both levers: init_model scored on old val before training (the baseline, reused at the end),
    the history's scores carry the unpenalised score, and the frozen LM layers are init_model's."""
    import torch
    from safetensors.torch import load_file

    from test_fab_continue import continue_tiny

    out = continue_tiny(tmp_path, "max_steps=12", "ema_decay=0.9", "eval_at=[0.5,1.0]", "select_penalty=5",
                        "select_drop_limit=0", "train_lm_layers=1")
    base = tmp_path / "base"  # the init model continue_tiny built
    vs = json.loads((out / "val_selection.json").read_text())
    s = vs["summary"]
    assert set(s["baseline"]) >= {"mixedwm38", "wm811k", "new-test"} and "change_points" in s
    evals = [h for h in vs["history"] if "eval_step" in h]
    assert len(evals) == 4 and all("score_unpenalised" in h and h["score"] <= h["score_unpenalised"] for h in evals)
    w0, w1 = load_file(next(base.glob("*.safetensors"))), load_file(next((out / "model").glob("*.safetensors")))
    frozen = [k for k in w0 if "layers.0." in k or "embed_tokens" in k]  # the tiny LM has 2 layers
    assert frozen and all(torch.equal(w0[k], w1[k]) for k in frozen)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if "layers.1." in k)


def test_dihedral_augmentation_keeps_bound_maps_notch_down():
    """new_augment=dihedral with new_augment_bound: a map naming a bound class (Notch-Cluster) is only ever
    mirrored left-right; the others take all 8 symmetries."""
    import torch

    from domainvlm.domains.wafer.expert_extend import bound_rows, sample_new

    base = torch.arange(16, dtype=torch.uint8).view(4, 4)  # no symmetry: each transform gives another array
    bank = SimpleNamespace(canvas=torch.stack([base, base]), cls=torch.tensor([0, 1]),
                           defects=[("Center", "Notch-Cluster"), ("Reticle-Repeat",)])
    bound = bound_rows(bank, ["Notch-Cluster"])
    assert bound.tolist() == [True, False]

    class Bank(SimpleNamespace):
        def __len__(self):
            return 2

    bank = Bank(canvas=bank.canvas, cls=bank.cls, defects=bank.defects)
    seen = {0: set(), 1: set()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        canvas, cls = sample_new(bank, 8, "dihedral", gen, bound)
        for c, k in zip(canvas, cls.tolist()):
            seen[k].add(tuple(c.flatten().tolist()))
    keep = {tuple(base.flatten().tolist()), tuple(base.flip(1).flatten().tolist())}
    assert seen[0] == keep and len(seen[1]) == 8


def test_eval_spread_takes_maps_from_the_whole_val_set():
    """eval_spread: a class-ordered val set (as WM-811K's) is sampled evenly, not by its first maps."""
    import numpy as np

    from domainvlm.domains.wafer.expert import _head
    from domainvlm.domains.wafer.sources import WaferSet

    defects = [("Loc",)] * 6 + [()] * 6 + [("Center",)] * 6
    ws = WaferSet([np.full((3, 3), i % 3, np.uint8) for i in range(18)], defects, ["val"] * 18, "wm811k", "wm811k", "x")
    assert {d for d in _head(ws, 6).defects} == {("Loc",)}
    spread = _head(ws, 6, spread=True)
    assert spread.defects == [("Loc",)] * 2 + [()] * 2 + [("Center",)] * 2 and spread.split == ["val"] * 6
    assert _head(ws, 0, spread=True) is ws


def test_synth_fab_adds_real_normal_maps_to_train_only(tmp_path):
    """--train-normal-from: the first N Normal maps of a wafer npz's train split join train.npz (labelled
    Normal); val.npz and test.npz are unchanged."""
    import numpy as np

    from domainvlm.domains.wafer.labelled import load_labelled_npz
    from domainvlm.domains.wafer.npz_writers import save_mixedwm38_npz
    from domainvlm.domains.wafer.sources import load_wafer_file
    from domainvlm.domains.wafer.synth import synth_set
    from domainvlm.domains.wafer.synth_fab import main
    from domainvlm.domains.wafer.taxonomy import default
    from domainvlm.taxonomy import extend

    mixed = tmp_path / "mixed.npz"
    save_mixedwm38_npz(synth_set(12, seed=3, classes=["Normal", "Center"], split_fracs={"train": 0.75, "val": 0.25}),
                       mixed)
    assert main([str(tmp_path / "a"), "--n", "2", "--val", "1", "--test", "1"]) == 0
    assert main([str(tmp_path / "b"), "--n", "2", "--val", "1", "--test", "1", "--train-normal-from", str(mixed),
                 "--train-normal", "3"]) == 0
    tax = extend(default(), __import__("pathlib").Path(__file__).resolve().parents[3] / "configs" / "fab-patterns.yaml")
    a, b = (load_labelled_npz(tmp_path / d / "train.npz", tax) for d in ("a", "b"))
    assert len(b) == len(a) + 3 and b.defects[len(a):] == [()] * 3
    real = load_wafer_file(mixed).select("train")
    first = [m for m, d in zip(real.maps, real.defects) if not d][:3]
    assert all(np.array_equal(x, y) for x, y in zip(b.maps[len(a):], first))
    for name in ("val.npz", "test.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
