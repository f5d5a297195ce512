"""The generic CNN teacher (train/teacher.py): it learns, and it survives a save/load round trip."""

from __future__ import annotations

import pytest
import torch

from domainvlm.errors import UserError
from domainvlm.train.teacher import TeacherCNN, accuracy, load_teacher, save_teacher, teacher_logits, train_teacher


def _toy(n: int, gen: torch.Generator):
    """Dark vs bright 16x16 RGB uint8 images (class 0 / 1)."""
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randint(0, 100, (n, 16, 16, 3), generator=gen, dtype=torch.uint8)
    return x + (y * 120).view(n, 1, 1, 1).to(torch.uint8), y


def test_teacher_learns_a_separable_task_and_round_trips(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = TeacherCNN(2, width=4)
    train_teacher(net, lambda: _toy(32, gen), steps=30, lr=0.05, log=lambda m: None)
    x, y = _toy(64, torch.Generator().manual_seed(1))
    assert accuracy(net, x, y) > 0.9 and not net.training
    path = tmp_path / "t.safetensors"
    save_teacher(net, path, {"classes": ["dark", "bright"]})
    back, meta = load_teacher(path, "cpu")
    assert meta == {"classes": ["dark", "bright"]} and back.width == 4 and not back.training
    # BatchNorm statistics included (the loaded net is channels_last: same values up to summation order)
    assert torch.allclose(teacher_logits(back, x), teacher_logits(net, x), atol=1e-5)


def test_not_a_teacher_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="junk.safetensors: not a readable"):
        load_teacher(junk, "cpu")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="not a domainvlm teacher"):
        load_teacher(other, "cpu")
