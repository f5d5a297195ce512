"""Resuming mid-epoch continues with exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from domainvlm.train.config import TrainConfig
from domainvlm.train import trainer
from domainvlm.train.trainer import train


def _data(tmp_path, n=14):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(tmp_path / f"{i}.png")
        rows.append({"id": str(i), "images": [f"{i}.png"], "messages": [
            {"role": "user", "content": "<image>\nWhat defect?"},
            {"role": "assistant", "content": f"Diagnosis: case {i} " + "x " * (i % 5)}]})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "d.jsonl"


def _run(data, model_dir, out, steps, resume=False):
    seen = []
    c = TrainConfig(model=str(model_dir), data=str(data), output_dir=str(out), max_steps=steps, batch_size=3,
                    lr=1e-3, eval_every=0, eval_samples=0, save_every=0, log_every=1)
    train(c, resume=resume, progress=False, on_step=lambda s, loss, b: seen.append(
        (s, tuple(b["input_ids"].sum(1).tolist()))))
    return seen


def test_resume_mid_epoch_replays_the_same_batch_order(tmp_path, tiny_model_dir, monkeypatch):
    data = _data(tmp_path)  # 14 records, batch 3, drop_last: 4 steps per epoch
    whole = _run(data, tiny_model_dir, tmp_path / "a", 7)
    assert len({b for _, b in whole}) > 3  # batches differ (the fingerprint means something)
    _run(data, tiny_model_dir, tmp_path / "b", 2)  # stops (and saves its checkpoint) mid-epoch 1
    loads = []
    from domainvlm.train import dataset

    real = dataset.RecordDataset.__getitem__
    monkeypatch.setattr(dataset.RecordDataset, "__getitem__", lambda self, i: loads.append(i) or real(self, i))
    # the training loop's loads are counted: not the max_length check's own pass over a sample (preflight.py)
    monkeypatch.setattr(trainer, "check_lengths", lambda *a: None)
    rest = _run(data, tiny_model_dir, tmp_path / "b", 7, resume=True)
    assert [s for s, _ in rest] == [3, 4, 5, 6, 7]
    assert rest == whole[2:]
    # the 2 skipped batches are not loaded (skipped in the batch sampler, not by iterating the loader): loading
    # them would add 6 items to the 15 trained on (plus the loader's look-ahead; 25 before, 19 now)
    assert 5 * 3 <= len(loads) < 5 * 3 + 2 * 3


def test_fsdp_refuses_qlora_with_one_clear_error(tmp_path, tiny_model_dir, monkeypatch):
    """Under FSDP, QLoRA (not sharded) is refused before anything is written; the distributed type is faked, as
    CPU CI has no process group. (--resume under FSDP works: tests/train/test_fsdp_cpu.py.)"""
    import accelerate
    import pytest
    from accelerate.utils import DistributedType

    from domainvlm.errors import UserError

    class FakeFSDP(accelerate.Accelerator):  # reports FSDP to the trainer once accelerate's own set-up is done
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self._fake = True

        @property
        def distributed_type(self):
            return DistributedType.FSDP if getattr(self, "_fake", False) else super().distributed_type

    data = _data(tmp_path)
    monkeypatch.setattr(accelerate, "Accelerator", FakeFSDP)
    out = tmp_path / "q"
    c = TrainConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(out), max_steps=1, batch_size=3,
                    eval_every=0, eval_samples=0, save_every=0, quantization="4bit", mode="lora")
    with pytest.raises(UserError, match="not sharded by FSDP"):
        train(c, progress=False)
    assert not out.exists()
