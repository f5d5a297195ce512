"""Optimizer, schedule and weight averaging shared by the recipes that run their own loop (the wafer expert,
the classify expert): one definition, so a fix or a change of schedule reaches every recipe."""

from __future__ import annotations

import copy
import math

import torch


def adamw(params, lr: float, weight_decay: float, device) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (norms, biases and embeddings' 1-D params are not decayed); fused on
    CUDA."""
    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), fused=torch.device(device).type == "cuda")


def warmup_cosine(step: int, progress: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine from 1 to ``min_lr_ratio`` over progress 0..1
    (progress may run on wall-clock time, so a time-budgeted run still ends annealed)."""
    scale = min(1.0, (step + 1) / max(1, warmup_steps))
    return scale * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def step_optimizer(opt: torch.optim.Optimizer, params, max_grad_norm: float) -> None:
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)


class Ema:
    """Exponential moving average of a model's weights, with the usual warm-up of the decay
    (``min(decay, (1 + step) / (10 + step))``), so early averages are not dominated by the initialisation."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self._avg = list(self.model.parameters())
        self._src = [p.detach() for p in model.parameters()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        torch._foreach_lerp_(self._avg, self._src, 1 - min(self.decay, (1 + step) / (10 + step)))


def ema_or_none(model, decay: float) -> Ema | None:
    return Ema(model, decay) if decay > 0 else None


def train_progress(step: int, max_steps: int, train_s: float, time_budget_s: float) -> float:
    """0..1: the larger of steps done and training time used (a time-budgeted run ends at 1 too)."""
    return min(1.0, max(step / max_steps, train_s / time_budget_s if time_budget_s else 0.0))


def select_weights(step: int, model, ema, score, key: str, best: dict | None, history: list, log) -> dict | None:
    """Score the raw and the averaged weights (``score(m) -> dict`` holding ``key``, higher is better), record
    each in ``history`` and ``log(line)``, and keep the best so far with a CPU copy of its state in ``"state"``.
    The model is back in train mode afterwards."""
    import json

    for tag, m in (("raw", model), ("ema", ema)):
        if m is None:
            continue
        m.eval()
        rec = {"eval_step": step, "weights": tag, **score(m)}
        history.append(rec)
        log(json.dumps(rec))
        if best is None or rec[key] > best[key]:
            best = {**rec, "state": {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}}
    model.train()
    return best
