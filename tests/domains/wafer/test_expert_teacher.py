"""The wafer recipe's CNN teacher and its distillation, end to end on CPU (tiny model and teacher)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_train_expert import TINY, _data

from domainvlm.cli import main

ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("DOMAINVLM_SHARED_DATA", ROOT.parent / "shared" / "data"))  # as conftest

TEACHER = ["teacher_width=4", "teacher_downsample=4", "teacher_batch=16"]
COMMON = ["batch_size=8", "short_answer_frac=0.5", "length_buckets=2", "warmup_steps=1", "log_every=1",
          "eval_at=[1.0]", *TINY]


def _teacher_line(out) -> dict:
    line = next(x for x in (out / "train_log.txt").read_text().splitlines() if x.startswith("# teacher {"))
    return json.loads(line.removeprefix("# teacher "))


def _losses(out) -> list:
    hist = json.loads((out / "val_selection.json").read_text())["history"]
    return [r["loss"] for r in hist if "step" in r]


@pytest.fixture
def wafer_data(tmp_path):
    """Real MixedWM38 + WM-811K (first maps of each split) when ../shared/data is there, else synthetic files."""
    mixed, wm = SHARED_DATA / "mixedwm38" / "mixedwm38_trainval.npz", SHARED_DATA / "wm811k" / "wm811k_trainval.npz"
    if mixed.is_file() and wm.is_file():
        return [f"mixedwm38={mixed}", f"wm811k={wm}", "limit_maps=150"]
    mixed, wm = _data(tmp_path)
    return [f"mixedwm38={mixed}", f"wm811k={wm}"]


@pytest.mark.slow
def test_teacher_trains_distils_saves_and_reloads(tmp_path, wafer_data):
    from safetensors import safe_open
    from transformers import Qwen2VLForConditionalGeneration

    out = tmp_path / "run"
    assert main(["train-expert", *wafer_data, *COMMON, f"output_dir={out}", "max_steps=3", "teacher_steps=4",
                 "kd_loss=1", *TEACHER]) == 0
    teacher = out / "teacher.safetensors"
    with safe_open(str(teacher), "pt") as fh:
        meta = json.loads(fh.metadata()["domainvlm"])["meta"]
    assert len(meta["classes"]) == 38 and meta["downsample"] == 4
    scores = _teacher_line(out)
    for name in ("mixedwm38", "wm811k"):
        assert set(scores[name]) == {"n", "exact_match", "macro_f1", "tta_exact_match", "tta_macro_f1"}
        assert scores[name]["n"] > 0
    hist = json.loads((out / "val_selection.json").read_text())["history"]
    kd = [r["kd_loss"] for r in hist if "step" in r]
    assert len(kd) == 3 and all(v > 0 for v in kd)  # distilled at every step
    # the model folder is a plain Qwen2-VL: no teacher in it, every weight matches the architecture
    assert not [p.name for p in (out / "model").iterdir() if "teacher" in p.name]
    _, info = Qwen2VLForConditionalGeneration.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # a later run loads the teacher instead of training one: the same weights give the same val scores
    again = tmp_path / "again"
    assert main(["train-expert", *wafer_data, *COMMON, f"output_dir={again}", f"teacher={teacher}",
                 "teacher_only=true"]) == 0
    loaded = _teacher_line(again)
    assert loaded["teacher"] == str(teacher) and loaded["downsample"] == 4
    assert {k: loaded[k] for k in ("mixedwm38", "wm811k")} == {k: scores[k] for k in ("mixedwm38", "wm811k")}
    assert not (again / "model").exists() and not (again / "teacher.safetensors").exists()


@pytest.mark.slow
def test_a_teacher_without_kd_leaves_the_expert_training_unchanged(tmp_path):
    """The teacher draws from its own random stream: with kd_loss=0 the expert trains exactly as without it."""
    mixed, wm = _data(tmp_path)
    data = [f"mixedwm38={mixed}", f"wm811k={wm}", "max_steps=3", "rotate_frac=0.5", "superpose_frac=0.5"]
    assert main(["train-expert", *data, *COMMON, f"output_dir={tmp_path / 'plain'}"]) == 0
    assert main(["train-expert", *data, *COMMON, f"output_dir={tmp_path / 'teach'}", "teacher_steps=3", *TEACHER]) == 0
    assert (tmp_path / "teach" / "teacher.safetensors").is_file()
    assert _losses(tmp_path / "teach") == _losses(tmp_path / "plain") and len(_losses(tmp_path / "plain")) == 3


@pytest.mark.parametrize("bad, words", [
    (["kd_loss=1"], "kd_loss"), (["teacher_only=true"], "teacher_only"),
    (["teacher_steps=5", "teacher=x.safetensors"], "either teacher"), (["kd_support=all"], "kd_support"),
    (["teacher_downsample=0"], "teacher_downsample"), (["kd_temperature=0"], "kd_temperature"),
    (["teacher_only=true", "teacher_steps=2", "phases=[{max_steps: 2}]"], "inside phases"),
    (["teacher=MISSING"], "teacher not found"), (["teacher=NOT_A_TEACHER"], "not a domainvlm teacher")])
def test_teacher_config_errors_are_one_clear_line_and_write_nothing(tmp_path, capsys, bad, words):
    mixed, wm = tmp_path / "m.npz", tmp_path / "w.npz"
    mixed.write_bytes(b""), wm.write_bytes(b"")  # present: the teacher is checked before the data is read
    other = tmp_path / "other.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(other))
    bad = [b.replace("MISSING", str(tmp_path / "nope.safetensors")).replace("NOT_A_TEACHER", str(other)) for b in bad]
    out = tmp_path / "run"
    assert main(["train-expert", f"mixedwm38={mixed}", f"wm811k={wm}", f"output_dir={out}", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_a_teacher_of_other_classes_is_refused(tmp_path):
    from types import SimpleNamespace

    from domainvlm.domains.wafer.expert_teacher import build, setup_teacher
    from domainvlm.errors import UserError
    from domainvlm.train.teacher import save_teacher

    path = tmp_path / "teacher.safetensors"
    meta = {"classes": ["Normal", "Center", "Loc"], "canvas": 224, "downsample": 4}
    save_teacher(build(3, 4, 4, 0, "cpu"), path, meta)
    cfg = SimpleNamespace(teacher=str(path), teacher_steps=0)
    with pytest.raises(UserError, match="3 classes on a 224-px canvas; this run needs 38 classes"):
        from domainvlm.domains.wafer.expert_data import CLASSES

        setup_teacher(cfg, None, CLASSES, None, [], 224, tmp_path, "cpu", print)
