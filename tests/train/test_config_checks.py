"""Training config values are checked right after loading, before any model loads or file is written: each bad
value is one error line naming the field, its value and what is allowed (exit 2, no traceback), and every
shipped config and the defaults pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from domainvlm.cli import main
from domainvlm.config import load_config
from domainvlm.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

TRAIN_BAD = [  # (overrides, the field the error must name)
    (["lr=-1"], "lr: -1.0"), (["lr=0"], "lr: 0.0"), (["batch_size=0"], "batch_size: 0"),
    (["max_steps=-5"], "max_steps: -5"), (["grad_accum=0"], "grad_accum"), (["mode=lorra"], "mode: 'lorra'"),
    (["precision=fp8"], "precision: 'fp8'"), (["mode=lora", "lora.r=0"], "lora.r: 0"),
    (["lora.alpha=0"], "lora.alpha"), (["lora.dropout=1.5"], "lora.dropout"), (["min_lr_ratio=2"], "min_lr_ratio"),
    (["weight_decay=-1"], "weight_decay"), (["max_grad_norm=-1"], "max_grad_norm"), (["warmup_ratio=2"], "warmup_ratio"),
    (["epochs=0"], "epochs"), (["val_fraction=1.5"], "val_fraction"), (["val_fraction=-0.1"], "val_fraction"),
    (["max_length=0"], "max_length"), (["eval_every=-1"], "eval_every"), (["log_every=0"], "log_every"),
    (["save_every=-1"], "save_every"), (["save_total_limit=0"], "save_total_limit"),
    (["eval_max_new_tokens=0"], "eval_max_new_tokens"), (["quantization=2bit"], "quantization"),
    (["stage=foo"], "stage"), (["select_metric=bogus"], "select_metric"), (["num_workers=-1"], "num_workers"),
    (["gradient_checkpointing=2"], "gradient_checkpointing"), (["attn_implementation=foo"], "attn_implementation"),
    (["min_pixels=-1"], "min_pixels"), (["min_pixels=5000", "max_pixels=1000"], "min_pixels: 5000"),
    (["compact.layers=0"], "compact.layers: 0"), (["compact.hidden=60", "compact.heads=7"], "compact.hidden: 60"),
    (["compact.resample=foo"], "compact.resample"),
]
RECIPE_BAD = [  # both recipes
    (["lr=-1"], "lr: -1.0"), (["batch_size=0"], "batch_size"), (["max_steps=-5"], "max_steps: -5"),
    (["warmup_steps=-1"], "warmup_steps"),
    (["eval_at=[1.5]"], "eval_at: [1.5]"), (["eval_at=[0]"], "eval_at: [0] is not allowed (must be a non-empty list of values in (0, 1])"), (["eval_at=[]"], "eval_at: []"),
    (["ema_decay=1.5"], "ema_decay"), (["ema_decay=1"], "ema_decay"), (["time_budget_s=-1"], "time_budget_s"),
    (["min_lr_ratio=2"], "min_lr_ratio"), (["weight_decay=-1"], "weight_decay"),
    (["max_grad_norm=0"], "max_grad_norm"), (["kd_temperature=0"], "kd_temperature"),
    (["teacher_steps=-1"], "teacher_steps"), (["teacher_batch=0"], "teacher_batch"), (["teacher_lr=0"], "teacher_lr"),
    (["log_every=0"], "log_every"), (["compact.layers=0"], "compact.layers"), (["lr=[1,2]"], "'lr' expects float"),
]
EXPERT_BAD = RECIPE_BAD + [
    (["mixed_frac=1.5"], "mixed_frac"), (["new_frac=-0.1"], "new_frac"), (["new_frac=1"], "new_frac"),
    (["wm811k_balance=-1"], "wm811k_balance"), (["eval_limit=-1"], "eval_limit"), (["limit_maps=-1"], "limit_maps"),
    (["length_buckets=0"], "length_buckets"), (["new_augment=foo"], "new_augment"),
    (["phases=[{max_steps: 400}, {lr: -1}]"], "phases[1]: lr: -1.0"),
]
CLASSIFY_BAD = RECIPE_BAD + [(["jitter=-1"], "jitter"), (["limit=-1"], "limit"), (["aux_loss=-1"], "aux_loss"),
                             (["input_check_max_reject=1"], "input_check_max_reject")]
CASES = ([("train", o, w) for o, w in TRAIN_BAD] + [("train-expert", o, w) for o, w in EXPERT_BAD]
         + [("train-classify", o, w) for o, w in CLASSIFY_BAD])
DATA = {"train": ["data=d.jsonl"], "train-expert": ["mixedwm38=m.npz", "wm811k=w.npz"],
        "train-classify": ["data=images"]}


@pytest.mark.parametrize("cmd, overrides, words", CASES, ids=[f"{c}:{' '.join(o)}" for c, o, _ in CASES])
def test_bad_value_is_one_line_naming_the_field_and_nothing_is_written(tmp_path, capsys, cmd, overrides, words):
    out = tmp_path / "run"
    data = [d.replace("=", f"={tmp_path}/", 1) for d in DATA[cmd]]  # absent: the values are checked first
    assert main([cmd, *data, f"output_dir={out}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("domainvlm: error: ") and len(err.splitlines()) == 1, err
    assert words in err and "Traceback" not in err, err
    assert "not found" not in err  # refused on the value, not on the missing data after it
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cmd, good", [
    ("train", ["max_grad_norm=0", "warmup_ratio=0", "min_lr_ratio=1", "stage=instruct", "quantization=none"]),
    ("train", ["model=somewhere", "compact.layers=0"]),  # the compact model is not built from a base model
    ("train-expert", ["max_steps=10", "warmup_steps=10", "ema_decay=0", "eval_at=[1]", "new_frac=0"]),
    ("train-classify", ["max_steps=10", "warmup_steps=10", "ema_decay=0", "input_check_max_reject=-1"]),
])
def test_edge_values_that_are_allowed_reach_the_data_check(tmp_path, capsys, cmd, good):
    data = [d.replace("=", f"={tmp_path}/", 1) for d in DATA[cmd]]
    assert main([cmd, *data, f"output_dir={tmp_path / 'run'}", *good]) == 2
    err = capsys.readouterr().err
    assert ("not found" in err or "no such" in err.lower()) and "is not allowed" not in err, err


def _checks():
    from domainvlm.domains.classify.recipe import ClassifyExpertConfig
    from domainvlm.domains.classify.recipe import _check as check_classify
    from domainvlm.domains.wafer.expert_config import ExpertConfig
    from domainvlm.domains.wafer.expert_config import check as check_expert
    from domainvlm.train.config import TrainConfig
    from domainvlm.train.config_checks import check_train

    return {"train": (TrainConfig, check_train), "expert": (ExpertConfig, check_expert),
            "classify": (ClassifyExpertConfig, check_classify)}


SHIPPED = {"fab-taxonomy-n200-hn.yaml": "expert", "fab-taxonomy-n200.yaml": "expert",
           "fab-taxonomy-n50-cpu.yaml": "expert", "wafer-expert.yaml": "expert", "neu-steel-expert.yaml": "classify",
           "qwen2vl_lora.yaml": "train", "qwen2vl_qlora.yaml": "train", "two_stage_1_align_for_lora.yaml": "train",
           "two_stage_2_instruct_lora.yaml": "train", "xray_report.yaml": "train"}
NOT_TRAINING = {"accelerate_ddp.yaml", "accelerate_fsdp.yaml",  # accelerate launch configs
                "fab-patterns.yaml", "neu-steel-taxonomy.yaml"}  # taxonomies


def test_every_shipped_config_and_the_defaults_pass():
    checks = _checks()
    files = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert files == set(SHIPPED) | NOT_TRAINING, "a new config: add it to SHIPPED (or NOT_TRAINING)"
    for name, kind in SHIPPED.items():
        cls, check = checks[kind]
        check(load_config(cls, ROOT / "configs" / name))
    for cls, check in checks.values():
        check(cls())


def test_library_train_checks_before_anything_is_written(tmp_path):
    from domainvlm.train.config import TrainConfig
    from domainvlm.train.trainer import train

    with pytest.raises(UserError, match=r"^grad_accum: 0 is not allowed \(must be >= 1\)$"):
        train(TrainConfig(data=str(tmp_path / "d.jsonl"), output_dir=str(tmp_path / "run"), grad_accum=0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, words", [
    ("lr: 0.001\nbatch_size: 4\nlr: 0.01\n", "c.yaml:3: key 'lr' is given twice"),
    ("lora:\n  r: 8\n  r: 4\n", "c.yaml:3: key 'r' is given twice"),
    ("lr: [0.001, 0.01]\n", "config: field 'lr' expects float"),
    ("lr: 0.001\nlearning_rate: 0.01\n", "config: unknown field(s) learning_rate"),
    ("lr: -0.001\n", "lr: -0.001 is not allowed (must be > 0)"),
])
def test_yaml_file_mistakes_are_refused(tmp_path, capsys, text, words):
    (tmp_path / "c.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_cli_process_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "domainvlm", "train", f"data={tmp_path / 'd.jsonl'}",
                        f"output_dir={tmp_path / 'run'}", "batch_size=0"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "domainvlm: error: batch_size: 0 is not allowed (must be >= 1)"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cmd", ["train-expert", "train-classify"])
def test_a_warmup_longer_than_the_run_warns_once_and_goes_on(tmp_path, capsys, cmd):
    """A quick try under the recipe's default warm-up is allowed: one warning line, then the data check."""
    data = [d.replace("=", f"={tmp_path}/", 1) for d in DATA[cmd]]
    assert main([cmd, *data, f"output_dir={tmp_path / 'run'}", "max_steps=10", "warmup_steps=20"]) == 2
    err = capsys.readouterr().err
    assert err.count("warmup_steps 20 > max_steps 10") == 1
    assert "not found" in err.splitlines()[-1]  # went on to the (absent) data


def test_the_warmup_warning_is_once_per_run_not_once_per_config_object(tmp_path, capsys):
    """Deduplicated by value, not id(): a phased recipe rebuilds its phase configs at each of its three checks
    (warned three times each before), and a freed config's id is taken by the next one (its run went unwarned)."""
    from domainvlm.domains.wafer.expert_config import ExpertConfig
    from domainvlm.train.config_checks import check_warmup

    data = [d.replace("=", f"={tmp_path}/", 1) for d in DATA["train-expert"]]
    assert main(["train-expert", *data, f"output_dir={tmp_path / 'run'}",
                 "phases=[{max_steps: 10, warmup_steps: 20}, {max_steps: 10, warmup_steps: 30}]"]) == 2
    err = capsys.readouterr().err
    assert err.count("warmup_steps 20 > max_steps 10") == 1 and err.count("warmup_steps 30 > max_steps 10") == 1
    for i in range(3):  # three runs of one process (a notebook), each config dropped after its run
        check_warmup(ExpertConfig(output_dir=str(tmp_path / f"run{i}"), max_steps=10, warmup_steps=40))
    assert capsys.readouterr().err.count("warmup_steps 40 > max_steps 10") == 3
