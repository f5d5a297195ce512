"""train/recipe_steps.py: the schedule and weight averaging both own-loop recipes use."""

import math

import pytest
import torch

from domainvlm.train.recipe_steps import Ema, adamw, ema_or_none, set_lr, step_optimizer, warmup_cosine


def test_warmup_then_cosine_to_the_floor():
    assert warmup_cosine(0, 0.0, 10, 0.1) == pytest.approx(0.1)      # first warm-up step
    assert warmup_cosine(9, 0.0, 10, 0.1) == pytest.approx(1.0)      # warm-up done, cosine at its top
    assert warmup_cosine(50, 0.5, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(99, 1.0, 10, 0.1) == pytest.approx(0.1)     # annealed to min_lr_ratio
    assert warmup_cosine(0, 0.3, 0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))


def test_adamw_decays_matrices_only_and_steps():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = adamw(model.parameters(), 0.1, 0.05, "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim < 2 for p in no_decay["params"])
    set_lr(opt, 0.01)
    assert {g["lr"] for g in opt.param_groups} == {0.01}
    before = model[0].weight.detach().clone()
    model(torch.randn(2, 3)).sum().backward()
    step_optimizer(opt, list(model.parameters()), 1.0)
    assert not torch.equal(before, model[0].weight) and model[0].weight.grad is None


def test_ema_follows_the_model_with_a_warm_up_of_the_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = Ema(model, 0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    start = ema.model.weight.detach().clone()
    ema.update(0)  # decay min(0.99, 1/10) = 0.1: moves 90% of the way
    assert torch.allclose(ema.model.weight, start + 0.9 * (1.0 - start))
    assert ema_or_none(model, 0.0) is None and not ema.model.training
