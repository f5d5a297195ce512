"""End to end on CPU: synthetic maps -> data build -> train a compact model -> eval well above chance."""

from __future__ import annotations

import json

import pytest

from domainvlm.cli import main

TINY_TRAIN = ["compact.image_size=32", "compact.vision_dim=64", "compact.vision_depth=2", "compact.vision_heads=2",
              "compact.hidden=128", "compact.layers=2", "compact.heads=2", "compact.kv_heads=1",
              "compact.intermediate=256", "compact.vocab_size=800"]
CLASSES = "Normal,Center,Donut,Edge-Loc,Edge-Ring,Loc,Near-full,Scratch,Random"


@pytest.mark.slow
def test_synthetic_build_train_eval(tmp_path, capsys):
    npz, data, run = tmp_path / "synth.npz", tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", "--out", str(npz), "--n", "1200", "--size", "32", "--classes", CLASSES,
                 "--val-fraction", "0.15", "--seed", "1"]) == 0
    assert main(["data", "build", "--source", str(npz), "--out", str(data), "--langs", "en,zh",
                 "--no-explain"]) == 0
    assert (data / "train.jsonl").exists() and (data / "val.jsonl").exists()
    assert main(["data", "validate", str(data / "val.jsonl")]) == 0
    rc = main(["train", f"data={data / 'train.jsonl'}", f"val_data={data / 'val.jsonl'}", f"output_dir={run}",
               "max_steps=300", "batch_size=16", "lr=3e-3", "eval_every=150", "eval_samples=32",
               "eval_max_new_tokens=24", "save_every=150", "log_every=25", "--no-progress", *TINY_TRAIN])
    assert rc == 0
    for f in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "loss_curve.png",
              "checkpoint/trainer_state.json", "train_config.json"):
        assert (run / f).exists(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    out = tmp_path / "metrics.json"
    assert main(["eval", "--model", str(run / "model"), "--data", str(data / "val.jsonl"), "--out", str(out),
                 "--quiet"]) == 0
    m = json.loads(out.read_text())
    for key in ("n", "exact_match", "macro_f1", "per_class", "confusion", "unparsed"):
        assert key in m
    assert m["n"] == 180
    # 9 balanced classes: chance is ~0.11; a working pipeline reaches far more after 300 steps.
    assert m["exact_match"] > 0.6, m["exact_match"]
    assert m["macro_f1"] > 0.5
    assert m["unparsed"] <= 0.05 * m["n"]
    assert (tmp_path / "metrics.confusion.png").stat().st_size > 1000
    # resume continues from the checkpoint to a larger step budget
    rc = main(["train", f"data={data / 'train.jsonl'}", f"val_data={data / 'val.jsonl'}", f"output_dir={run}",
               "max_steps=310", "batch_size=16", "lr=3e-3", "eval_every=0", "eval_samples=0", "log_every=5",
               "--no-progress", "--resume", *TINY_TRAIN])
    assert rc == 0
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 310
