"""`domainvlm train` under torchrun with 2 CPU processes (gloo, DDP): it finishes and saves (a tracker
shutdown once destroyed the process group before the final save), and a run whose launcher and both ranks are
SIGKILLed after a checkpoint resumes to the same loss at every step as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_resume import _data

pytestmark = pytest.mark.slow
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(data, model, out, *extra) -> subprocess.Popen:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_port()), "-m", "domainvlm", "train",
           f"data={data}", f"model={model}", f"output_dir={out}", "max_steps=6", "save_every=3", "batch_size=2",
           "eval_every=0", "eval_samples=0", "log_every=1", "report_to=tensorboard", "lr=0.002", "--no-progress",
           *extra]
    return subprocess.Popen(cmd, stdout=open(f"{out}.log", "w"), stderr=subprocess.STDOUT, env=env)


def _losses(out: Path) -> list[tuple[int, float]]:
    hist = json.loads((out / "checkpoint" / "trainer_state.json").read_text())["history"]
    return [(h["step"], h["loss"]) for h in hist if "loss" in h]


def _step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def _tree(pid: int) -> list[int]:
    kids = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids += [int(d), *_tree(int(d))]
    return kids


def kill_after_checkpoint(p: subprocess.Popen, out: Path, step: int) -> None:
    """SIGKILL the launcher ``p`` and every rank under it once the checkpoint of ``step`` is on disk."""
    deadline = time.monotonic() + 600
    while p.poll() is None and _step(out) < step and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed"
    for pid in [p.pid, *_tree(p.pid)]:  # the launcher and both ranks
        os.kill(pid, signal.SIGKILL)
    p.wait()


@pytest.mark.skipif(not TORCHRUN.exists() or not Path("/proc").is_dir(), reason="needs torchrun and /proc")
def test_two_process_run_finishes_and_resumes_after_sigkill_to_the_same_losses(tmp_path, tiny_model_dir):
    data = _data(tmp_path)
    whole = tmp_path / "whole"
    assert _launch(data, tiny_model_dir, whole).wait(600) == 0, (tmp_path / "whole.log").read_text()[-2000:]
    assert (whole / "model" / "config.json").exists() and [s for s, _ in _losses(whole)] == list(range(1, 7))
    assert list((whole / "tb").glob("events.out.tfevents.*"))  # rank 0 logged; the run still ended cleanly
    run = tmp_path / "killed"
    kill_after_checkpoint(_launch(data, tiny_model_dir, run), run, 3)
    assert _step(run) == 3 and not (run / "model").exists()
    assert _launch(data, tiny_model_dir, run, "--resume").wait(600) == 0, (tmp_path / "killed.log").read_text()[-2000:]
    assert _losses(run) == [(s, pytest.approx(v, abs=1e-6)) for s, v in _losses(whole)]
