"""The generic trainer's user mistakes are one line before anything is written (a changed config on --resume, a
max_length that cuts images, FlashAttention without its package), and val_fraction=0 holds out nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from domainvlm.cli import main
from domainvlm.errors import UserError
from domainvlm.train.config import TrainConfig
from domainvlm.train.trainer import train

from test_train_resume import _data


def _args(data, model, out, *more):
    return ["train", f"model={model}", f"data={data}", f"output_dir={out}", "max_steps=1", "batch_size=3",
            "eval_every=0", "eval_samples=0", "save_every=0", "report_to=none", "--no-progress", *more]


def test_resume_with_another_mode_rank_or_base_is_one_line_naming_what_differs(tmp_path, tiny_model_dir, capsys,
                                                                                one_error_line):
    data, out = _data(tmp_path), tmp_path / "run"
    assert main(_args(data, tiny_model_dir, out, "mode=lora", "lora.r=4")) == 0
    capsys.readouterr()  # the first run's own output
    before = sorted(p.name for p in out.rglob("*"))
    # mode=full on a LoRA checkpoint was a traceback (peft: no adapter_config.json / torch: optimizer groups)
    assert main(_args(data, tiny_model_dir, out, "mode=full", "max_steps=2", "--resume")) == 2
    line = one_error_line()
    assert line.startswith("domainvlm: error: --resume: ") and "mode: lora there, full here" in line
    # another rank was silently replaced by the checkpoint's own (peft reads its adapter_config.json)
    assert main(_args(data, tiny_model_dir, out, "mode=lora", "lora.r=8", "max_steps=2", "--resume")) == 2
    assert "lora.r: 4 there, 8 here" in one_error_line()
    other = shutil.copytree(tiny_model_dir, tmp_path / "other-base")
    assert main(_args(data, other, out, "mode=lora", "lora.r=4", "max_steps=2", "--resume")) == 2
    assert f"model: {tiny_model_dir} there, {other} here" in one_error_line()
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written by the refused runs
    # the same settings (the base named another way) still resume
    assert main(_args(data, f"{tiny_model_dir}/", out, "mode=lora", "lora.r=4", "max_steps=2", "--resume")) == 0
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2


def test_resume_check_reads_the_run_config_of_an_older_checkpoint(tmp_path):
    """Checkpoints saved before they kept their config: the run's train_config.json stands in; neither: no check."""
    from domainvlm.train.preflight import check_resume

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    cfg = TrainConfig(model="base", mode="lora")
    check_resume(cfg, ckpt, tmp_path)  # nothing to compare with
    (tmp_path / "train_config.json").write_text(json.dumps({"model": "base", "mode": "lora", "lora": {"r": 4},
                                                            "max_steps": 10, "lr": 1.0}))
    with pytest.raises(UserError, match=r"\(lora\.r: 4 there, 16 here\)"):
        check_resume(cfg, ckpt, tmp_path)
    cfg.lora.r, cfg.max_steps, cfg.lr = 4, 99, 0.5  # a longer run or another lr is a fair resume
    check_resume(cfg, ckpt, tmp_path)


def test_max_length_shorter_than_the_image_tokens_is_one_line_before_anything_is_written(
        tmp_path, tiny_model_dir, one_error_line):
    data, out = _data(tmp_path), tmp_path / "run"
    assert main(_args(data, tiny_model_dir, out, "max_length=8")) == 2
    line = one_error_line()
    assert "max_length=8 cuts through the image tokens of record" in line and "max_length >= " in line
    needed = int(line.split("max_length >= ")[1].split()[0])
    assert needed > 8
    assert not out.exists()
    assert main(_args(data, tiny_model_dir, out, "mode=lora", f"max_length={needed}")) == 0  # enough for the images


def test_flash_attention_without_its_package_is_one_line_before_anything_is_written(
        tmp_path, tiny_model_dir, one_error_line):
    from transformers.utils.import_utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        pytest.skip("flash-attn runs here")
    out = tmp_path / "run"
    assert main(_args(_data(tmp_path), tiny_model_dir, out, "attn_implementation=flash_attention_2")) == 2
    line = one_error_line()
    assert line.startswith("domainvlm: error: attn_implementation=flash_attention_2: ") and "use sdpa" in line
    assert not out.exists()


def test_val_fraction_zero_holds_out_nothing_and_selects_on_the_train_loss(tmp_path, tiny_model_dir, capsys):
    data, out = _data(tmp_path), tmp_path / "run"
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(out), max_steps=4, batch_size=3,
                      val_fraction=0, eval_every=2, eval_samples=0, save_every=0, log_every=1, report_to="none")
    res = train(cfg, progress=False)
    log = capsys.readouterr().out
    assert "on 14 records (0 val)" in log and "no validation records: no val step" in log
    assert '"val_loss"' not in log
    assert set(res["best"]) == {"step", "train_loss"} and (out / "model").is_dir()
    with pytest.raises(UserError, match="select_metric=exact_match needs validation records"):
        train(TrainConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(tmp_path / "em"),
                          val_fraction=0, select_metric="exact_match"), progress=False)
    assert not (tmp_path / "em").exists()
    from domainvlm.train.dataset import split_records

    recs = list(range(14))
    assert split_records(recs, TrainConfig(val_fraction=0)) == (recs, [])
    assert len(split_records(recs, TrainConfig(val_fraction=0.01))[1]) == 1  # any share > 0: at least one
