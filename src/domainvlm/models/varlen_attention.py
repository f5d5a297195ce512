"""Padding-free attention for packed training rows: torch's built-in varlen flash attention.

A packed row (train/speed.py) is many samples back to back, each restarting its positions at 0. With sdpa,
transformers turns that into a (T x T) block-diagonal mask, which sends attention to the masked kernels; on
an H100 that is cuDNN, which re-plans for every new packed length (seconds of host time per step, profiled
with bench/profile_step.py) and computes every masked block. ``torch.nn.attention.varlen.varlen_attn`` takes
the sample boundaries (cu_seqlens) instead: no mask, no wasted blocks, no plan per shape, and the vision
tower's images run as one call rather than a Python loop over images. No flash-attn package is needed.

The trainer switches a model to this only around packed training forwards (:func:`use_varlen`); loading,
eval and generation stay on sdpa. The registered name contains "flash" so transformers takes its unpadded
paths (cu_seqlens for the vision tower, no 4-D mask for the language model). On CPU, or a torch without
varlen_attn, a per-sample sdpa loop gives the same result (slowly): the plumbing is testable anywhere.
"""

from __future__ import annotations

import inspect
import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F

NAME = "flash_varlen_torch"
_last: list = [None, None]  # (weakref to the position_ids tensor, (cu_seqlens, max_len)) - one sync per forward


def _kernel():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, set()
    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


def _seqlens(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    ref, cached = _last
    if ref is not None and ref() is position_ids:
        return cached
    pos = position_ids.reshape(-1, position_ids.shape[-1])[0]
    starts = (pos == 0).nonzero().flatten()
    if len(starts) == 0 or int(starts[0]) != 0:
        raise ValueError("varlen attention: a packed row must start a sample at position 0")
    cu = torch.cat([starts, starts.new_tensor([pos.numel()])]).to(torch.int32)
    out = (cu, int((cu[1:] - cu[:-1]).max()))
    _last[0], _last[1] = weakref.ref(position_ids), out
    return out


def _reference(q, k, v, cu, causal: bool, scale):
    """(T, H, D) per-sample sdpa: the CPU path and the definition the kernel must match."""
    outs = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
                                           is_causal=causal, scale=scale)
        outs.append(o.transpose(0, 1))
    return torch.cat(outs)


@torch.compiler.disable  # compiled decoder layers (compile=true) break here: the boundaries are data-dependent
def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, is_causal=None, **kwargs):
    """transformers attention interface: (B=1, H, T, D) in, ((1, T, H, D), None) out."""
    if attention_mask is not None:
        raise ValueError("varlen attention takes packed rows without padding (got an attention mask)")
    if dropout and module.training:
        raise ValueError("varlen attention: attention dropout is not supported")
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    cu, max_len = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None and kwargs.get("position_ids") is None:  # unpacked full attention (e.g. a CLIP vision tower)
        out = F.scaled_dot_product_attention(query, key, value, is_causal=causal, scale=scaling,
                                             enable_gqa=key.shape[1] != query.shape[1])
        return out.transpose(1, 2), None
    if query.shape[0] != 1:
        raise ValueError(f"varlen attention takes one packed row, got a batch of {query.shape[0]}")
    if cu is None:
        cu, max_len = _seqlens(kwargs["position_ids"])
    elif max_len is None:
        max_len = int((cu[1:] - cu[:-1]).max())
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (T, H, D)
    fn, params = _kernel()
    gqa = k.shape[1] != q.shape[1]
    if gqa and not (fn is not None and q.is_cuda and "enable_gqa" in params):
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))  # expand kv heads
        gqa = False
    if fn is None or not q.is_cuda:
        out = _reference(q, k, v, cu, causal, scaling)
    else:
        kw = {"scale": scaling} if "scale" in params else {}
        if gqa:
            kw["enable_gqa"] = True
        if "is_causal" in params:
            kw["is_causal"] = causal
        elif causal:
            kw["window_size"] = (-1, 0)  # newer torch: causal is a window reaching 0 tokens ahead
        cu = cu.to(torch.int32)
        out = fn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, max_len, max_len, **kw)
    return out.unsqueeze(0), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, lambda *a, attention_mask=None, **k: attention_mask)


def _configs(model) -> list:
    from transformers import PretrainedConfig

    cached = getattr(model, "_domainvlm_attn_configs", None)
    if cached is None:
        seen = {}
        for m in model.modules():
            c = getattr(m, "config", None)
            if isinstance(c, PretrainedConfig):
                seen[id(c)] = c
        cached = list(seen.values())
        object.__setattr__(model, "_domainvlm_attn_configs", cached)
    return cached


@contextmanager
def use_varlen(model):
    """Run the model's attention through varlen_attn inside the block (packed inputs only)."""
    _register()
    configs = _configs(model)
    old = [c._attn_implementation_internal for c in configs]
    try:
        for c in configs:
            c._attn_implementation_internal = NAME
        yield
    finally:
        for c, o in zip(configs, old):
            c._attn_implementation_internal = o
