"""presence_loss: the training-only pattern-presence head learns, and the saved model does not contain it."""

from __future__ import annotations

import json

import pytest
import torch

from domainvlm.domains.wafer.patterns import PATTERNS
from domainvlm.domains.wafer.presence import PresenceHead, pattern_targets


def test_pattern_targets_are_the_multi_hot_of_each_class_name():
    t = pattern_targets(["Normal", "Center+Scratch", "Donut+Edge-Loc+Loc+Scratch"], "cpu")
    assert t.shape == (3, len(PATTERNS)) and t[0].sum() == 0
    assert [PATTERNS[i] for i in t[1].nonzero().flatten()] == ["Center", "Scratch"]
    assert t[2].sum() == 4 and t[2, PATTERNS.index("Center")] == 0


def test_presence_head_learns_which_pattern_a_token_carries():
    # 4 images x 5 tokens: a pattern is present when one token carries its direction (max-pool must find it)
    torch.manual_seed(0)
    head = PresenceHead(16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    dirs = torch.randn(len(PATTERNS), 16)

    def batch():
        y = (torch.rand(32, len(PATTERNS)) < 0.3).float()
        x = torch.randn(32, 5, 16) * 0.3
        for i in range(32):
            for k in y[i].nonzero().flatten():
                x[i, int(torch.randint(0, 5, ()))] += 2 * dirs[k]
        return x.view(-1, 16), y

    x0, y0 = batch()
    first = head.loss(x0, y0).item()
    for _ in range(300):
        x, y = batch()
        opt.zero_grad()
        head.loss(x, y).backward()
        opt.step()
    x, y = batch()
    acc = ((head(x, 32) > 0).float() == y).float().mean().item()
    assert head.loss(x, y).item() < 0.3 * first and acc > 0.95, (first, acc)


@pytest.mark.slow
def test_train_expert_with_presence_loss_logs_it_and_saves_a_plain_model(tmp_path):
    from safetensors import safe_open

    from domainvlm.cli import main
    from test_train_expert import TINY, _data

    mixed, wm = _data(tmp_path)
    out = tmp_path / "run"
    assert main(["train-expert", f"mixedwm38={mixed}", f"wm811k={wm}", f"output_dir={out}", "max_steps=3",
                 "batch_size=8", "presence_loss=0.5", "length_buckets=2", "warmup_steps=1", "log_every=1",
                 "eval_at=[1.0]", *TINY]) == 0
    steps = [r for r in json.loads((out / "val_selection.json").read_text())["history"] if "step" in r]
    assert len(steps) == 3 and all(0 < r["presence_loss"] < 5 for r in steps)
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        assert not any("presence" in k or k.startswith("out.") or k.startswith("norm.") for k in f.keys())
