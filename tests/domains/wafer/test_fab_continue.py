"""Continue a model on a fab's own taxonomy (train-expert taxonomy=..., expert_extend.py) end to end on CPU: a
tiny model, synthetic MixedWM38/WM-811K-like replay files and one new class; the saved folder's head answers
with the new class. No ../shared data needed."""

from __future__ import annotations

import json

import numpy as np
import pytest

YAML = """name: tiny-fab
classes:
  - name: Reticle-Repeat
    zh: 光罩重复
    description: {en: "a periodic grid of failing dies at the reticle pitch", zh: "按光罩间距周期性失效"}
combinations:
  - [Center, Reticle-Repeat]
"""


def _replay(tmp_path):
    from domainvlm.domains.wafer.npz_writers import save_mixedwm38_npz, save_wm811k_npz
    from domainvlm.domains.wafer.sources import WaferSet
    from domainvlm.domains.wafer.synth import synth_map, synth_set

    mixed = tmp_path / "mixed.npz"
    save_mixedwm38_npz(synth_set(16, seed=1, classes=["Normal", "Center", "Scratch", "Center+Scratch"],
                                 split_fracs={"train": 0.75, "val": 0.25}), mixed)
    rng = np.random.default_rng(0)
    kinds = [(), ("Center",), ("Edge-Ring",)]
    sets = [kinds[i % 3] for i in range(12)]
    maps = [synth_map(d, int(rng.integers(20, 40)), rng) for d in sets]
    wm = tmp_path / "wm.npz"
    save_wm811k_npz(WaferSet(maps, sets, ["val" if i % 3 == 0 else "train" for i in range(12)], "wm811k",
                             "wm811k", str(wm)), wm)
    return mixed, wm


def _new(tmp_path, name, n, seed):
    from domainvlm.domains.wafer.labelled import save_labelled_npz
    from domainvlm.domains.wafer.synth_fab import synth_fab_set

    p = tmp_path / f"{name}.npz"
    save_labelled_npz(synth_fab_set(n, seed, classes=("Reticle-Repeat",), mixed_frac=0.0), p)
    return p


@pytest.mark.slow
def continue_tiny(tmp_path, *overrides: str):
    """train-expert continuing a tiny compact model on the tiny taxonomy's new class (16 train maps, replay of
    tiny MixedWM38 / WM-811K sets); ``overrides`` are extra key=value settings. Returns the run folder."""
    from conftest import build_tiny_compact
    from domainvlm.cli import main

    base = tmp_path / "base"
    build_tiny_compact(base)
    mixed, wm = _replay(tmp_path)
    (tmp_path / "mine.yaml").write_text(YAML, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train-expert", f"init_model={base}", f"taxonomy={tmp_path / 'mine.yaml'}",
                 f"new_data={_new(tmp_path, 'train', 16, 0)}", f"new_val={_new(tmp_path, 'val', 4, 1)}",
                 f"new_test={_new(tmp_path, 'test', 4, 2)}", f"mixedwm38={mixed}", f"wm811k={wm}",
                 f"output_dir={out}", "new_frac=0.75", "lr=0.003", "batch_size=8", "warmup_steps=1",
                 "short_answer_frac=1.0", "follow_up_frac=0", "out_of_scope_frac=0", "log_every=10",
                 "eval_baseline=true", *overrides]) == 0
    return out


def test_continue_on_a_new_class(tmp_path):
    from domainvlm.domains.wafer.head import make_head
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map
    from domainvlm.models.loader import load_model
    from domainvlm.taxonomy import from_model_dir

    out = continue_tiny(tmp_path, "max_steps=30", "ema_decay=0", "eval_at=[1.0]")
    tax = from_model_dir(out / "model")
    assert tax.names[-1] == "Reticle-Repeat" and tax.get("Reticle-Repeat").zh == "光罩重复"
    assert ("Center", "Reticle-Repeat") in tax.answer_sets() and len(tax.answer_sets()) == 40
    summary = json.loads((out / "val_selection.json").read_text())["summary"]
    assert set(summary["best"]["new-val"]["new_class_f1_per_class"]) == {"Reticle-Repeat"}
    assert summary["test"]["new-test"]["n"] == 4 and summary["baseline"]["new-test"]["new_class_f1"] == 0.0
    model, proc = load_model(out / "model", device="cpu")
    head = make_head(model, proc, out / "model")  # the registry's factory: taxonomy from the folder
    img = render_map(synth_map(("Reticle-Repeat",), 52, np.random.default_rng(9)), size=32)
    q = [{"role": "user", "content": "<image>\nWhat defect pattern does this wafer map show?"}]
    q_zh = [{"role": "user", "content": "<image>\n这张晶圆图显示了什么缺陷模式？"}]
    en, zh = head.answer([(q, [img]), (q_zh, [img])])
    assert en.startswith("Diagnosis: Reticle-Repeat\n- Reticle-Repeat: a periodic grid"), en
    assert zh.startswith("诊断：光罩重复(Reticle-Repeat)\n"), zh
    # no calibration.json (init_model's is for other classes): the log and the card give the command, which runs
    # as given (a labelled map set's split is its file name: val.npz is all val)
    import shlex

    from domainvlm.cli import main

    assert not (out / "model" / "calibration.json").exists()
    hint = next(ln for ln in (out / "train_log.txt").read_text().splitlines() if "domainvlm calibrate" in ln)
    assert hint.split("`")[1] in (out / "model" / "README.md").read_text()
    cmd = shlex.split(hint.split("`")[1])[1:]
    assert main(cmd + ["--force", "--threads", "1"]) == 0 and (out / "model" / "calibration.json").exists()
