"""Checkpoints survive a kill inside the atomic swap, resumed runs with augmentation equal uninterrupted ones,
and the last K checkpoints are kept."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from domainvlm.train import checkpoint as ck
from domainvlm.train.config import TrainConfig
from domainvlm.train.trainer import train


def _data(tmp_path, n=14):
    """Wafer-task records (dihedral augmentation applies to them) with distinct, asymmetric images."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(tmp_path / f"{i}.png")
        rows.append({"id": str(i), "images": [f"{i}.png"], "labels": {"task": "wafer", "defects": ["Center"]},
                     "messages": [{"role": "user", "content": "<image>\nWhat defect?"},
                                  {"role": "assistant", "content": f"Diagnosis: case {i} " + "x " * (i % 5)}]})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "d.jsonl"


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the training loop."""


def _run(data, model_dir, out, steps=7, resume=False, kill_at=None, **kw):
    """Train the 7-step schedule; ``kill_at`` stops the run right after that step (before its save)."""
    seen = []

    def on_step(s, loss, b):
        if s == kill_at:
            raise Killed(s)
        seen.append((s, loss.item(), b["pixel_values"].double().sum().item(), tuple(b["input_ids"].sum(1).tolist())))

    c = TrainConfig(model=str(model_dir), data=str(data), output_dir=str(out), max_steps=steps, batch_size=3,
                    lr=1e-3, eval_every=0, eval_samples=0, log_every=1, augment="dihedral",
                    **{"save_every": 0 if kill_at is None else 1, **kw})
    try:
        train(c, resume=resume, progress=False, on_step=on_step)
    except Killed:
        pass
    return seen


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and x[3] == y[3] and math.isclose(x[1], y[1], rel_tol=1e-5)
                                    and math.isclose(x[2], y[2], rel_tol=1e-9) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def whole(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    return _data(tmp), _run(_data(tmp), tiny_model_dir, tmp / "a")


def test_resume_with_dihedral_augment_equals_the_uninterrupted_run(whole, tiny_model_dir, tmp_path):
    data, full = whole
    assert len({x[2] for x in full}) > 3
    _run(data, tiny_model_dir, tmp_path / "b", kill_at=3)  # killed mid-epoch 1; the last checkpoint is step 2
    rest = _run(data, tiny_model_dir, tmp_path / "b", resume=True)
    assert _same(rest, full[2:]), (rest, full[2:])


def test_resume_recovers_from_a_kill_between_the_two_renames(whole, tiny_model_dir, tmp_path, monkeypatch):
    data, full = whole
    out = tmp_path / "k"
    real = ck.os.replace

    def replace(a, b):  # step 2's save: checkpoint -> .checkpoint.old done, killed before .tmp -> checkpoint
        if str(a).endswith(".checkpoint.tmp") and (out / ".checkpoint.old").exists():
            raise KeyboardInterrupt("SIGKILL stand-in")
        real(a, b)

    monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _run(data, tiny_model_dir, out, kill_at=99, save_every=1)
    monkeypatch.undo()
    assert not (out / "checkpoint").exists()
    assert ck.checkpoint_step(out / ".checkpoint.old") == 1 and ck.checkpoint_step(out / ".checkpoint.tmp") == 2
    rest = _run(data, tiny_model_dir, out, resume=True)  # the newer leftover (.tmp, step 2) is used
    assert _same(rest, full[2:])
    assert not (out / ".checkpoint.old").exists() and not (out / ".checkpoint.tmp").exists()


def test_resume_from_an_old_leftover_alone(whole, tiny_model_dir, tmp_path):
    data, full = whole
    out = tmp_path / "o"
    _run(data, tiny_model_dir, out, kill_at=2)
    (out / "checkpoint").rename(out / ".checkpoint.old")
    (out / ".checkpoint.tmp").mkdir()  # a save cut short: no trainer_state.json
    (out / ".checkpoint.tmp" / "optim.pt").write_bytes(b"half")
    rest = _run(data, tiny_model_dir, out, resume=True)
    assert _same(rest, full[1:])


def test_save_total_limit_keeps_the_last_k(whole, tiny_model_dir, tmp_path):
    data, _ = whole
    out = tmp_path / "k3"
    _run(data, tiny_model_dir, out, kill_at=6, save_total_limit=3)
    kept = sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint", ".checkpoint")))
    assert kept == ["checkpoint", "checkpoint-3", "checkpoint-4"]
    assert [ck.checkpoint_step(out / k) for k in kept] == [5, 3, 4]
