"""Training-step speed options: padding-free packing and answer-only logits (same loss, less work).

``packing``: a padded batch becomes one row of only real tokens; every sample keeps its own positions (and
Qwen's 3-D M-RoPE positions), and transformers' masking turns position resets into a block-diagonal causal
mask, so samples never attend to each other. Pad tokens then cost no FLOPs.
``compile``: torch.compile each language-model decoder layer (regional compilation, dynamic shapes), to fuse
the many small kernels of a LoRA layer (casts, dropout, adds, norms, RoPE, SwiGLU). Attention stays eager
(data-dependent sample boundaries), and the fused LoRA linears are not used (inductor fuses those ops). Losses
match eager; compiling costs about a minute on the first steps (docs/benchmarks.md).
``attn_implementation=varlen`` (with packing): attention per sample from the packed row's boundaries with
torch's varlen flash attention - no (T x T) mask, no per-image loop in the vision tower
(models/varlen_attention.py).
``liger_kernels``: Liger-Kernel's fused Triton kernels for RMSNorm, SwiGLU, RoPE and the vision LayerNorm,
patched into the model instance (fewer, larger kernels: the LoRA step is partly launch-bound). The loss stays
ours (its fused linear cross-entropy is off: answer-only logits already skip unlabelled positions). Its RoPE
replacement is module-wide in transformers (every model of that family in the process).
``answer_logits``: labels are answer-only, so most positions never enter the loss; the LM head (152k-wide
for Qwen2-VL) and its float32 softmax run only on labelled positions - gigabytes of activations saved.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.chat_format import IGNORE
from .fused_lora import cached_modules, fused_lora

_SEQ = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")


def hf_model(model):
    """The transformers model inside DDP/FSDP/peft wrappers."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """targets[:, t] = labels[:, t + 1]: what position t predicts (IGNORE past each row's end)."""
    t = torch.full_like(labels, IGNORE)
    t[:, :-1] = labels[:, 1:]
    return t


def pack(model, batch: dict, targets: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Padded batch -> one packed row without pad tokens (see module doc). Returns (batch, targets)."""
    mask = batch["attention_mask"].bool()
    text_pos = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    core = getattr(hf_model(model), "model", None)
    out = {k: v for k, v in batch.items() if k not in _SEQ}
    if hasattr(core, "get_rope_index") and "image_grid_thw" in batch:
        # Qwen M-RoPE: (temporal, height, width) positions per sample, with the text positions prepended as
        # row 0 - the layout transformers reads as "packed" (modeling_qwen2_vl, text_position_ids).
        pos3, _ = core.get_rope_index(batch["input_ids"], mm_token_type_ids=batch.get("mm_token_type_ids"),
                                      image_grid_thw=batch["image_grid_thw"], attention_mask=batch["attention_mask"])
        out["position_ids"] = torch.cat([text_pos[None], pos3.to(text_pos)], 0)[:, mask][:, None]
    else:
        out["position_ids"] = text_pos[mask][None]
    for k in ("input_ids", "mm_token_type_ids", "token_type_ids"):
        if k in batch:
            out[k] = batch[k][mask][None]
    return out, targets[mask][None]


def _attention(model, cfg):
    if cfg.attn_implementation != "varlen":
        return nullcontext()
    from ..models.varlen_attention import use_varlen

    return use_varlen(model)


def load_attn(cfg) -> str | None:
    """The attention implementation to load with: varlen is switched on per training forward (sdpa otherwise)."""
    return "sdpa" if cfg.attn_implementation == "varlen" else cfg.attn_implementation


@contextmanager
def lora_inputs_uncast(model, active: bool):
    """Keep LoRA inputs in the activation dtype (bf16) inside the block.

    peft copies every LoRA layer's input to the adapter's float32 before dropout; under bf16 autocast the
    adapter matmuls then run in bf16 anyway, so the copies (a float32 activation per adapted linear, kept for
    backward by dropout) buy nothing. Only for autocast training forwards: without autocast a bf16 input
    would meet float32 adapter weights.
    """
    if not active:
        yield
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = cached_modules(model, "_domainvlm_lora_layers", lambda m: isinstance(m, BaseTunerLayer))
    old = [getattr(m, "cast_input_dtype_enabled", True) for m in layers]
    try:
        for m in layers:
            m.cast_input_dtype_enabled = False
        yield
    finally:
        for m, o in zip(layers, old):
            m.cast_input_dtype_enabled = o


@contextmanager
def train_context(model, cfg, autocast_lora: bool = False):
    """Wrap forward *and* backward of a training step (checkpointed layers re-run their forward in backward, and
    must see the same attention and casting): varlen attention, LoRA inputs kept in the autocast dtype, fused
    LoRA linears. autocast_lora: the forward runs under bf16/fp16 autocast with LoRA adapters (see
    lora_inputs_uncast); lora_fp32_inputs=true asks for peft's own path, so it also turns fusing off."""
    # compiled layers fuse the LoRA ops themselves; the fused linears' per-step bound methods would also
    # fail dynamo's guards and recompile every step
    fuse = cfg.mode == "lora" and cfg.fused_lora and not cfg.lora_fp32_inputs and not getattr(cfg, "compile", False)
    with lora_inputs_uncast(model, autocast_lora), _attention(model, cfg), fused_lora(model, fuse):
        yield


def step_loss(model, batch: dict, cfg, return_logits: bool = False):
    """The training loss of one micro-batch: the model's own loss, or the packed/answer-only equivalent.

    ``return_logits`` (not with packing): ``(loss, logits, keep)`` for a recipe's extra losses on the same
    forward; ``logits[:, i]`` predicts the token after position ``keep[i]`` (``keep`` None: every position)."""
    if return_logits and cfg.packing:
        raise ValueError("return_logits needs unpacked rows")
    if not (cfg.packing or cfg.answer_logits):
        out = model(**batch)
        return (out.loss, out.logits, None) if return_logits else out.loss
    batch = dict(batch)
    targets = shifted_targets(batch.pop("labels"))
    if cfg.packing:
        batch, targets = pack(model, batch, targets)
    keep = (targets != IGNORE).any(0).nonzero().squeeze(1) if cfg.answer_logits else None
    kw = {"logits_to_keep": keep} if keep is not None else {}
    out = model(**batch, use_cache=False, **kw)
    logits = out.logits
    if keep is not None:
        targets = targets[:, keep]
    if not (targets != IGNORE).any():  # nothing labelled (e.g. all answers truncated): zero, but keep the graph
        loss = logits.sum() * 0.0
    else:
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
    return (loss, logits, keep) if return_logits else loss


def compile_layers(model) -> int:
    """Compile the language model's decoder layers in place (regional compilation, dynamic shapes); returns how
    many. One compiled graph serves every layer; attention stays eager (a graph break per layer). The frozen
    vision tower is left eager: it also runs under no_grad, which would recompile its blocks."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from ..models.parts import part_of

    n = 0
    for name, m in hf_model(model).named_modules():
        if isinstance(m, GradientCheckpointingLayer) and part_of(name) == "lm":
            m.compile(dynamic=True)
            n += 1
    return n


def liger_kernels(model) -> dict:
    """Patch Liger-Kernel's fused kernels into this model instance (see module doc); returns what was patched.

    Module by module rather than through Liger's per-family entry points: those also import its fused-loss
    forwards, which do not import on transformers >= 5.2x (Qwen2-VL's output classes were renamed).
    """
    if not torch.cuda.is_available():
        raise UserError("liger_kernels=true needs a CUDA GPU (Liger's kernels are Triton kernels)")
    try:
        from liger_kernel.transformers import LigerSwiGLUMLP, liger_rotary_pos_emb
        from liger_kernel.transformers.monkey_patch import (_patch_layer_norm_module, _patch_rms_norm_module,
                                                            _patch_swiglu_module)
    except ImportError:
        raise UserError("liger_kernels=true needs the liger-kernel package: pip install liger-kernel") from None
    base = hf_model(model)
    done = {"rms_norm": 0, "layer_norm": 0, "swiglu": 0, "rope": 0}
    modeling = set()  # the modeling modules the model's classes come from (for RoPE below)
    for m in base.modules():
        modeling.add(type(m).__module__)
        if type(m).__name__.endswith("RMSNorm") and getattr(m, "weight", None) is not None:
            _patch_rms_norm_module(m)
            done["rms_norm"] += 1
        elif isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
            _patch_layer_norm_module(m)
            done["layer_norm"] += 1
        elif all(hasattr(m, n) for n in ("gate_proj", "up_proj", "down_proj")) and \
                type(getattr(m, "act_fn", None)).__name__ in ("SiLU", "SiLUActivation"):
            _patch_swiglu_module(m, LigerSwiGLUMLP)
            done["swiglu"] += 1
    # RoPE: each family's text attention calls its modeling module's apply_rotary_pos_emb by name (older
    # transformers applied Qwen's M-RoPE sections in a different function: those modules are left alone).
    for name in modeling:
        mod = sys.modules.get(name)
        if hasattr(mod, "apply_rotary_pos_emb") and not hasattr(mod, "apply_multimodal_rotary_pos_emb"):
            mod.apply_rotary_pos_emb = liger_rotary_pos_emb
            done["rope"] += 1
    if not any(done.values()):
        raise UserError(f"liger_kernels=true: nothing in {type(base).__name__} that Liger's kernels replace")
    return done


def rank_weight(acc, batch: dict) -> torch.Tensor | float:
    """Scale for this rank's token-mean loss so that DDP/FSDP's gradient averaging equals the token mean over
    the whole global batch (as on one GPU), not a mean of per-rank means: world * n_rank / n_global."""
    if acc.num_processes == 1:
        return 1.0
    n = (batch["labels"][:, 1:] != IGNORE).sum().float()
    total = acc.reduce(n.clone(), "sum")
    return acc.num_processes * n / total.clamp(min=1)
