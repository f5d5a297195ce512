"""compile=true: the LM decoder layers are compiled (vision tower left eager) and train to the same loss."""

from __future__ import annotations

import torch

from domainvlm.models.tiny import build_tiny
from domainvlm.train import speed
from domainvlm.train.config import LoraConfig, TrainConfig
from domainvlm.train.tuning import apply_memory_options, apply_tuning, part_of


def compiled(model) -> dict[str, int]:
    out = dict.fromkeys(("lm", "vision", "projector"), 0)
    for name, m in speed.hf_model(model).named_modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            out[part_of(name)] += 1
    return out


def test_compile_marks_every_lm_layer_and_no_vision_block(tmp_path):
    model, _ = build_tiny("qwen2_vl", tmp_path, save=False)
    peft_model = apply_tuning(model, TrainConfig(mode="lora"))
    apply_memory_options(peft_model, TrainConfig(mode="lora"))
    assert compiled(peft_model) == {"lm": 0, "vision": 0, "projector": 0}  # off by default
    apply_memory_options(peft_model, TrainConfig(mode="lora", compile=True))
    assert compiled(peft_model) == {"lm": model.config.text_config.num_hidden_layers, "vision": 0, "projector": 0}


def test_compile_turns_the_fused_lora_linears_off(tmp_path):
    model, _ = build_tiny("qwen2_vl", tmp_path, save=False)
    peft_model = apply_tuning(model, TrainConfig(mode="lora"))
    for opts, fused in ((dict(), True), (dict(compile=True), False)):
        with speed.train_context(peft_model, TrainConfig(mode="lora", **opts)):
            patched = any("forward" in m.__dict__ for m in peft_model.modules())
        assert patched is fused


def test_compiled_lora_step_matches_eager(tmp_path):
    """One packed varlen LoRA step, eager vs compiled layers: same loss, same LoRA gradients (CPU inductor)."""
    from test_tuning_speed import batch_for
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, proc = build_tiny("qwen2_vl", tmp_path, save=False)
    peft_model = apply_tuning(model, TrainConfig(mode="lora", lora=LoraConfig(dropout=0.0)))  # same RNG-free math
    b = batch_for(proc)
    params = [p for p in peft_model.parameters() if p.requires_grad]

    def step(c):
        peft_model.train()
        with speed.train_context(peft_model, c):
            loss = speed.step_loss(peft_model, b, c)
            return loss.detach(), torch.autograd.grad(loss, params)

    opts = dict(mode="lora", packing=True, answer_logits=True, attn_implementation="varlen")
    ref, g_ref = step(TrainConfig(**opts))
    c = TrainConfig(**opts, compile=True)
    apply_memory_options(peft_model, c)
    try:
        got, g = step(c)
        assert counters["stats"]["unique_graphs"] > 0  # really compiled, not a silent eager fallback
    finally:
        torch._dynamo.reset()
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (got.item(), ref.item())
    assert any(x.abs().sum() > 0 for x in g_ref)
    for a, d in zip(g_ref, g):
        assert torch.allclose(a, d, rtol=1e-4, atol=1e-6)
