"""`domainvlm train` with the model sharded by FSDP2 over 2 CPU processes (gloo; accelerate's FSDP path forced
on CPU by fsdp_cpu_main.py): a run whose launcher and both ranks are SIGKILLed after a checkpoint resumes to
the same loss at every step as an uninterrupted run (also when the kill left the checkpoint mid-swap), and its
checkpoint also resumes in one process."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from test_ddp_cpu import TORCHRUN, _losses, _port, _step, kill_after_checkpoint
from test_train_resume import _data

from domainvlm.models.loader import load_model
from domainvlm.train.config import TrainConfig
from domainvlm.train.trainer import train

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_RESHARD_AFTER_FORWARD": "true"}


def _launch(data, model, out, *extra) -> subprocess.Popen:
    src = str(HERE.parents[1] / "src")
    env = {**os.environ, **FSDP_ENV, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_port()), str(HERE / "fsdp_cpu_main.py"),
           "train", f"data={data}", f"model={model}", f"output_dir={out}", "max_steps=6", "save_every=3",
           "batch_size=2", "eval_every=0", "eval_samples=0", "log_every=1", "report_to=none", "lr=0.002",
           "--no-progress", *extra]
    return subprocess.Popen(cmd, stdout=open(f"{out}.log", "w"), stderr=subprocess.STDOUT, env=env)


@pytest.mark.skipif(not TORCHRUN.exists() or not Path("/proc").is_dir(), reason="needs torchrun and /proc")
def test_fsdp_run_resumes_after_sigkill_to_the_same_losses(tmp_path, tiny_model_dir):
    data = _data(tmp_path)
    whole = tmp_path / "whole"
    assert _launch(data, tiny_model_dir, whole).wait(600) == 0, (tmp_path / "whole.log").read_text()[-2000:]
    assert "FSDPQwen2VL" in (tmp_path / "whole.log").read_text()  # the model really was sharded by fully_shard
    run = tmp_path / "killed"
    kill_after_checkpoint(_launch(data, tiny_model_dir, run), run, 3)
    assert _step(run) == 3 and not (run / "model").exists()
    optim = torch.load(run / "checkpoint" / "optim.pt", weights_only=True)
    assert len(optim["rank_rng"]) == 2  # every rank's RNG, written by rank 0
    model, _ = load_model(run / "checkpoint" / "model")  # the full (gathered) optimizer state, by parameter name
    assert {n: st["exp_avg"].shape for n, st in optim["optimizer"]["state"].items()} == {
        n: p.shape for n, p in model.named_parameters()}
    shutil.copytree(run / "checkpoint", tmp_path / "one" / "checkpoint")
    (run / "checkpoint").rename(run / ".checkpoint.tmp")  # as if killed inside the swap: rank 0 recovers it alone
    assert _launch(data, tiny_model_dir, run, "--resume").wait(600) == 0, (tmp_path / "killed.log").read_text()[-2000:]
    assert _losses(run) == [(s, pytest.approx(v, abs=1e-6)) for s, v in _losses(whole)]
    # the FSDP checkpoint resumes in one process too (by index there): Adam's step count goes on from 3
    one = tmp_path / "one"
    train(TrainConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(one), max_steps=6, save_every=3,
                      batch_size=2, eval_every=0, eval_samples=0, lr=0.002), resume=True, progress=False)
    optim = torch.load(one / "checkpoint" / "optim.pt", weights_only=True)["optimizer"]
    assert {int(st["step"]) for st in optim["state"].values()} == {6}
