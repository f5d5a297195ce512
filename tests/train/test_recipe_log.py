"""The GPU recipes' run log (train/recipe_log.py): text lines as before, every metrics record to TensorBoard
(train/<field>, val/<weights>/<set>.<metric>), the curves PNG at the end, report_to=none writes no tb/."""

from __future__ import annotations

import pytest
from PIL import Image

from domainvlm.train.recipe_log import RecipeLog, curves, metric_values

from test_trackers import _tb_scalars

HISTORY = [
    {"step": 10, "loss": 0.5, "lr": 1e-3, "progress": 0.5, "train_s": 1.0},
    {"eval_step": 10, "weights": "raw", "mixedwm38": {"n": 8, "exact_match": 0.25, "macro_f1": 0.2,
                                                      "unparsed_rate": 0.0}, "score": 0.3},
    {"eval_step": 10, "weights": "ema", "mixedwm38": {"n": 8, "exact_match": 0.5, "macro_f1": 0.4,
                                                      "unparsed_rate": 0.0}, "score": 0.45},
    {"step": 20, "loss": 0.25, "lr": 5e-4, "progress": 1.0, "train_s": 2.0},
    {"eval_step": 20, "weights": "raw", "mixedwm38": {"n": 8, "exact_match": 0.75, "macro_f1": 0.7,
                                                      "unparsed_rate": 0.0}, "score": 0.8},
]


def test_records_become_tagged_scalars():
    assert metric_values(HISTORY[0]) == ({"train/loss": 0.5, "train/lr": 1e-3, "train/progress": 0.5,
                                          "train/train_s": 1.0}, 10)
    vals, step = metric_values(HISTORY[2])
    assert step == 10 and vals == {"val/ema/mixedwm38.exact_match": 0.5, "val/ema/mixedwm38.macro_f1": 0.4,
                                   "val/ema/mixedwm38.unparsed_rate": 0.0, "val/ema/score": 0.45}  # no counts
    assert metric_values({"note": "x"}) is None
    train, val = curves(HISTORY)
    assert train == [(10, 0.5), (20, 0.25)] and val["raw/score"] == [(10, 0.3), (20, 0.8)]
    assert "raw/mixedwm38.unparsed_rate" not in val


def test_tensorboard_text_log_and_png(tmp_path, capsys):
    log = RecipeLog(tmp_path, "tensorboard")
    log("# a line")
    log.sync(HISTORY[:3])
    log.sync(HISTORY[:3])  # nothing twice
    log.close(HISTORY)
    assert (tmp_path / "train_log.txt").read_text() == "# a line\n" and "# a line" in capsys.readouterr().out
    assert _tb_scalars(tmp_path / "tb", "train/loss") == [(10, 0.5), (20, 0.25)]
    assert [s for s, _ in _tb_scalars(tmp_path / "tb", "val/raw/score")] == [10, 20]
    assert _tb_scalars(tmp_path / "tb", "val/ema/mixedwm38.exact_match") == [(10, 0.5)]
    with Image.open(tmp_path / "training_curves.png") as im:
        assert im.size == (1100, 400)


def test_report_to_none_writes_no_tracker_files(tmp_path):
    log = RecipeLog(tmp_path, "none")
    log.close(HISTORY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_log.txt", "training_curves.png"]


@pytest.mark.parametrize("cmd", ["train-expert", "train-classify"])
def test_bad_report_to_is_one_line_before_anything_is_written(tmp_path, capsys, cmd):
    from domainvlm.cli import main

    run = tmp_path / "run"
    data = [] if cmd == "train-expert" else [f"data={tmp_path}"]
    assert main([cmd, *data, f"output_dir={run}", "report_to=tensorbored"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown tracker 'tensorbored'" in err[0], err
    assert not run.exists()


def test_progress_bar_keeps_the_lines_and_is_off_off_a_terminal(tmp_path, capsys):
    """Under pytest (no terminal) tqdm's bar is disabled: only the text lines reach stdout, in order."""
    log = RecipeLog(tmp_path, "none")
    log.progress(0.25, 10, 0.5)
    log("# after the bar started")
    log.progress(0.5, 20)  # no new loss: the last one stays in the bar's text
    assert log.bar.disable and log.bar.n == 500 and log.loss == 0.5
    log.close(HISTORY)
    assert log.bar is None
    out = capsys.readouterr()
    assert out.out == "# after the bar started\n" and "train" not in out.err
    assert (tmp_path / "train_log.txt").read_text() == "# after the bar started\n"
