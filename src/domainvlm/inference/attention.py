"""Attention kernels for answering on a GPU: PyTorch's SDPA without its cuDNN backend.

torch 2.11 sends attention with an explicit mask (padding, the diagnosis token tree) on Hopper and newer to
cuDNN first, and cuDNN builds an execution plan for every new shape. Decoding meets a new key length at every
step, so the first batch of a fresh eval on an H200 spent 5.9 s of its ~8 s in 84 such calls (the same
batch runs in 0.4 s once the plans exist; ``bench/eval_startup.py --profile``), and every new batch size paid
again. The memory-efficient and flash kernels take the same inputs without per-shape plans. Training is left
as it is: its shapes repeat, so a plan is built once and reused.
"""

from __future__ import annotations

import contextlib

import torch


def answering_attention(device):
    """A context for inference forwards on ``device``: SDPA may use flash, memory-efficient or math kernels,
    not cuDNN's (on CPU and where torch lacks ``sdpa_kernel``: nothing changes)."""
    if torch.device(device).type != "cuda":  # "cuda:0" too
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: no cuDNN attention either
        return contextlib.nullcontext()
    # the backend flags are process-wide: two engines answering at once in two threads could leave cuDNN off
    # after both end (a speed matter for later work in the process, never a wrong result)
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
