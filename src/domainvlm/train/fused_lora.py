"""Fused LoRA linear for training: base matmul, dropout and both adapter matmuls as one autograd node.

peft's ``lora.Linear`` computes ``base(x) + B(A(dropout(x))) * s`` as about eight ops and autograd nodes per
layer (casts, dropout, two matmuls, a full-size multiply and add); a 7B LoRA step launches ~6k kernels and is
host-bound (docs/benchmarks.md). Here the scaling goes onto the small [tokens, r] tensor, the adapter output is
accumulated into the base output by one ``addmm_``, and backward accumulates the adapter's input gradient in
place. Dropout keeps only its mask and re-applies it in backward: q/k/v (and gate/up) share one input, which
is then held once instead of one dropped copy per layer. Same math as peft; any layer that does not fit
(DoRA or other variants, several active adapters, merged or disabled adapters, a quantized or non-Linear base,
LoRA biases, extra forward arguments) keeps peft's own forward.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


class LoraLinearFn(torch.autograd.Function):
    """y = x W^T + b + s * dropout(x) A^T B^T, in the autocast dtype when autocast is on (as peft's ops are)."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, p: float, scaling: float, training: bool):
        dt = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, x.shape[-1]).to(dt)
            ac, bc = a.to(dt), b.to(dt)
            y = F.linear(x2, weight.to(dt), None if bias is None else bias.to(dt))
            mask = None
            xd = x2
            if training and p > 0:
                xd, mask = torch.native_dropout(x2, p, True)
            hs = (xd @ ac.t()).mul_(scaling)  # [N, r]: scaling on the small tensor
            y.addmm_(hs, bc.t())
        ctx.save_for_backward(x2, mask, weight, ac, bc, hs)
        ctx.meta = (x.shape, x.dtype, a.dtype, b.dtype, p, scaling)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, gy):
        x2, mask, weight, ac, bc, hs = ctx.saved_tensors
        shape, x_dtype, a_dtype, b_dtype, p, scaling = ctx.meta
        keep = 1.0 / (1.0 - p) if mask is not None else 1.0
        with torch.autocast(gy.device.type, enabled=False):
            g = gy.reshape(-1, gy.shape[-1]).to(ac.dtype)
            gb = (g.t() @ hs).to(b_dtype) if ctx.needs_input_grad[4] else None
            gh = (g @ bc).mul_(scaling)  # [N, r]
            ga = None
            if ctx.needs_input_grad[3]:
                xd = x2 if mask is None else torch.ops.aten.native_dropout_backward(x2, mask, keep)
                ga = (gh.t() @ xd).to(a_dtype)
            gx = None
            if ctx.needs_input_grad[0]:
                gx = g @ weight.to(g.dtype)
                if mask is None:
                    gx.addmm_(gh, ac)
                else:
                    gx.add_(torch.ops.aten.native_dropout_backward(gh @ ac, mask, keep))
                gx = gx.view(shape).to(x_dtype)
        return gx, None, None, ga, gb, None, None, None


def _plan(layer, x: torch.Tensor):
    """(weight, bias, A, B, dropout p, scaling, training) when the fused path computes exactly what peft would."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    base, a, b, drop = layer.base_layer, layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
    if type(base) is not nn.Linear or type(a) is not nn.Linear or type(b) is not nn.Linear:
        return None
    if a.bias is not None or b.bias is not None or base.weight.requires_grad:
        return None
    if base.bias is not None and base.bias.requires_grad:
        return None
    if not isinstance(drop, (nn.Dropout, nn.Identity)):
        return None
    if not torch.is_autocast_enabled(x.device.type) and not (x.dtype == a.weight.dtype == base.weight.dtype):
        return None  # peft would compute the adapter in its own (float32) dtype: leave it to peft
    p = drop.p if isinstance(drop, nn.Dropout) else 0.0
    return base.weight, base.bias, a.weight, b.weight, p, float(layer.scaling[name]), drop.training


def _fused_forward(self, x, *args, **kwargs):
    plan = None if (args or kwargs) else _plan(self, x)
    if plan is None:
        return type(self).forward(self, x, *args, **kwargs)
    return LoraLinearFn.apply(x, *plan)


def cached_modules(model, attr: str, keep) -> list:
    """The model's submodules for which ``keep(m)`` holds, found once and cached on the model under ``attr``
    (adapter layers do not change during training; object.__setattr__ keeps the list out of nn.Module's
    registries)."""
    found = getattr(model, attr, None)
    if found is None:
        found = [m for m in model.modules() if keep(m)]
        object.__setattr__(model, attr, found)
    return found


def lora_layers(model) -> list:
    """peft's plain ``lora.Linear`` layers of a model."""
    from peft.tuners.lora.layer import Linear

    return cached_modules(model, "_domainvlm_fusable_lora", lambda m: type(m) is Linear)


@contextmanager
def fused_lora(model, active: bool = True):
    """Run eligible LoRA linears through LoraLinearFn inside the block (forward and checkpointed backward)."""
    layers = lora_layers(model) if active else []
    try:
        for m in layers:
            m.forward = types.MethodType(_fused_forward, m)
        yield len(layers)
    finally:
        for m in layers:
            m.__dict__.pop("forward", None)
