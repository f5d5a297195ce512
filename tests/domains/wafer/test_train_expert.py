"""The wafer-expert recipe runs end to end on CPU (tiny model, synthetic MixedWM38- and WM-811K-like files)."""

from __future__ import annotations

import json

import numpy as np
import pytest


TINY = ("compact.vision_dim=32 compact.vision_depth=1 compact.vision_heads=2 compact.hidden=64 compact.layers=1 "
        "compact.heads=2 compact.kv_heads=1 compact.intermediate=128").split()


def _data(tmp_path):
    from domainvlm.domains.wafer.npz_writers import save_mixedwm38_npz, save_wm811k_npz
    from domainvlm.domains.wafer.sources import WaferSet
    from domainvlm.domains.wafer.synth import synth_map, synth_set

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
    return mixed, wm


@pytest.mark.slow
def test_train_expert_smoke(tmp_path, capsys):
    from domainvlm.cli import main
    from domainvlm.models.loader import load_model

    mixed, wm = _data(tmp_path)
    out = tmp_path / "run"
    tiny = TINY
    assert main(["train-expert", f"mixedwm38={mixed}", f"wm811k={wm}", f"output_dir={out}", "max_steps=3",
                 "batch_size=8", "superpose_frac=0.5", "rotate_frac=0.5", "short_answer_frac=0.5", "length_buckets=4",
                 "warmup_steps=1", "log_every=2", "eval_at=[1.0]", *tiny]) == 0
    sel = json.loads((out / "val_selection.json").read_text())
    assert sel["summary"]["steps"] == 3 and sel["summary"]["best"]["weights"] in ("raw", "ema")
    assert {r["weights"] for r in sel["history"] if "eval_step" in r} == {"raw", "ema"}
    assert "# done" in (out / "train_log.txt").read_text()
    # the same records live in TensorBoard (train/<field>, val/<weights>/<set>.<metric>) and the curves PNG
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "tb"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("train/loss")] == [2, 3]  # every log_every-th step and the last
    assert tb.Scalars("val/ema/score")[0].value == pytest.approx(
        next(r["score"] for r in sel["history"] if r.get("weights") == "ema"), rel=1e-5)
    assert (out / "training_curves.png").stat().st_size > 5000
    model, _ = load_model(out / "model", device="cpu")
    assert model.config.domainvlm["answer_head"] == "wafer-diagnosis"
    from domainvlm.taxonomy import from_model_dir

    assert len(from_model_dir(out / "model").answer_sets()) == 38  # the taxonomy is stored with the model
    from domainvlm.models.card import read_front_matter

    fm = read_front_matter(out / "model" / "README.md")  # the HF card carries the selected val metrics
    got = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in fm["model-index"][0]["results"]}
    best = sel["summary"]["best"]
    assert got == {"MixedWM38 val": round(best["mixedwm38"]["exact_match"], 4),
                   "WM-811K val": round(best["wm811k"]["exact_match"], 4)}
    assert fm["pipeline_tag"] == "image-text-to-text" and fm["license"] == "apache-2.0"
    # the same command again: refused (it restarted and appended to the finished run's log and curves)
    capsys.readouterr()
    again = ["train-expert", f"mixedwm38={mixed}", f"wm811k={wm}", f"output_dir={out}", "batch_size=8",
             "warmup_steps=1", "log_every=2", "eval_at=[1.0]", *tiny]
    weights = (out / "model" / "model.safetensors").read_bytes()
    assert main(again + ["max_steps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a finished run" in err and "overwrite=true" in err and len(err.splitlines()) == 1
    assert (out / "model" / "model.safetensors").read_bytes() == weights and not (out / "train_log.prev.txt").exists()
    assert main(again + ["max_steps=2", "overwrite=true"]) == 0  # a new run with its own log and curves
    assert (out / "train_log.txt").read_text().count("# wafer expert recipe") == 1
    assert "# done: 3 steps" in (out / "train_log.prev.txt").read_text()
    tb = EventAccumulator(str(out / "tb"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("train/loss")] == [2]


@pytest.mark.slow
def test_train_expert_phases_chain_and_resume(tmp_path, capsys):
    import yaml

    from domainvlm.cli import main
    from domainvlm.models.loader import load_model

    mixed, wm = _data(tmp_path)
    out = tmp_path / "run"
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump({"mixedwm38": str(mixed), "wm811k": str(wm), "output_dir": str(out),
                                   "batch_size": 8, "warmup_steps": 1, "log_every": 1, "eval_at": [1.0],
                                   "phases": [{"max_steps": 2}, {"max_steps": 3, "lr": 0.0005, "rotate_frac": 0.5}]}))
    assert main(["train-expert", "--config", str(cfg), *TINY]) == 0
    log2 = (out / "phase2" / "train_log.txt").read_text()
    assert f'"init_model": "{out / "phase1" / "model"}"' in log2 and '"lr": 0.0005' in log2
    assert json.loads((out / "phase2" / "val_selection.json").read_text())["summary"]["steps"] == 3
    assert (out / "model" / "model.safetensors").read_bytes() == (out / "phase2" / "model" / "model.safetensors").read_bytes()
    load_model(out / "model", device="cpu")
    capsys.readouterr()
    assert main(["train-expert", "--config", str(cfg), *TINY]) == 0  # both finished: nothing is retrained
    assert capsys.readouterr().out.count("finished earlier") == 2
    assert log2 == (out / "phase2" / "train_log.txt").read_text()


def test_train_expert_bad_phase_is_one_clear_error(tmp_path, capsys):
    from domainvlm.cli import main

    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("phases:\n  - {max_stepz: 3}\n")
    assert main(["train-expert", "--config", str(cfg)]) != 0
    err = capsys.readouterr().err
    assert "phases[0]" in err and "max_stepz" in err and "Traceback" not in err
    cfg.write_text(f"output_dir: {tmp_path / 'run'}\nphases:\n  - {{max_steps: 3, warmup_steps: 1}}\n  - {{rotate_frac: 2}}\n")
    assert main(["train-expert", "--config", str(cfg)]) != 0
    err = capsys.readouterr().err
    assert "phases[1]" in err and "rotate_frac" in err and not (tmp_path / "run").exists()  # phase 1 never ran


@pytest.mark.parametrize("bad, field", [
    ("rotate_frac=1.5", "rotate_frac"), ("short_answer_frac=-0.1", "short_answer_frac"),
    ("length_buckets=0", "length_buckets"), ("eval_at=[0,1]", "eval_at"), ("eval_at=[]", "eval_at"),
    ("presence_loss=-1", "presence_loss"), ("train_lm_layers=-1", "train_lm_layers"),
    ("select_penalty=-1", "select_penalty"), ("new_overlay_frac=1.5", "new_overlay_frac"),
    ("new_overlay_frac=0.5", "new_overlay_frac needs new_data"), ("shift_px=-1", "shift_px"),
    ("die_noise=0.7", "die_noise")])
def test_train_expert_bad_values_are_one_clear_error(tmp_path, capsys, bad, field):
    """Every recipe lever's bad value: one line naming the field, exit != 0, nothing written."""
    from domainvlm.cli import main

    assert main(["train-expert", f"output_dir={tmp_path / 'run'}", bad]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0], err
    assert not (tmp_path / "run").exists()  # nothing written


def test_train_expert_missing_data_writes_nothing(tmp_path, capsys):
    from domainvlm.cli import main

    out = tmp_path / "run"
    assert main(["train-expert", f"output_dir={out}", f"mixedwm38={tmp_path / 'nope.npz'}",
                 f"wm811k={tmp_path / 'nope2.npz'}", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"domainvlm: error: {tmp_path / 'nope.npz'}: wafer data not found (set mixedwm38=PATH)"]
    assert not out.exists()  # used to build and save an init model and open a log first


@pytest.mark.parametrize("given, words", [
    ({"mixedwm38": "fab"}, "is a labelled map set, not a MixedWM38 npz (mixedwm38=); labelled maps of new classes "
                           "go to new_data= / new_val= / new_test="),
    ({"wm811k": "fab"}, "is a labelled map set, not a WM-811K npz (wm811k=)"),
    ({"mixedwm38": "wm"}, "is a WM-811K npz, not a MixedWM38 npz (mixedwm38=); give it as wm811k="),
    ({"wm811k": "mixed"}, "is a MixedWM38 npz, not a WM-811K npz (wm811k=); give it as mixedwm38="),
    ({"phases": "fab"}, "phases[1]: "),  # a later phase's file: refused before phase 1 trains
])
def test_train_expert_wrong_replay_file_is_refused_before_anything_is_written(tmp_path, one_error_line, given, words):
    """A labelled map set (synth_fab's train.npz) or the other data set as mixedwm38= / wm811k= used to fail
    after building a model (labelled) or to train on the wrong set (swapped); now one line, nothing written."""
    from domainvlm.cli import main
    from domainvlm.domains.wafer.synth_fab import main as synth_fab

    mixed, wm = _data(tmp_path)
    assert synth_fab([str(tmp_path / "fab"), "--n", "5", "--val", "2", "--test", "2"]) == 0
    files = {"mixed": mixed, "wm": wm, "fab": tmp_path / "fab" / "train.npz"}
    args = {"mixedwm38": mixed, "wm811k": wm}
    if "phases" in given:
        args["phases"] = f"[{{max_steps: 2, warmup_steps: 1}}, {{mixedwm38: {files[given.pop('phases')]}}}]"
    args |= {k: files[v] for k, v in given.items()}
    out = tmp_path / "run"
    assert main(["train-expert", *(f"{k}={v}" for k, v in args.items()), f"output_dir={out}", *TINY]) == 2
    err = one_error_line()
    bad = files["fab"] if "phases" in args else next(files[v] for v in given.values())
    assert err.startswith("domainvlm: error: ") and f"{bad}: is " in err and words in err, err
    assert not out.exists()
