"""liger_kernels=true: Liger's kernels patched into the model instance, one clear error where that cannot work."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from domainvlm.errors import UserError
from domainvlm.models.tiny import FAMILIES, build_tiny
from domainvlm.train import speed
from domainvlm.train.config import TrainConfig


def fake_liger(monkeypatch):
    """A stand-in liger_kernel package that records what would be patched (the real one needs Triton)."""
    calls = []
    tr = types.ModuleType("liger_kernel.transformers")
    tr.LigerSwiGLUMLP = object()
    tr.liger_rotary_pos_emb = lambda *a, **k: None
    mp = types.ModuleType("liger_kernel.transformers.monkey_patch")
    mp._patch_rms_norm_module = lambda m: calls.append(("rms_norm", m))
    mp._patch_layer_norm_module = lambda m: calls.append(("layer_norm", m))
    mp._patch_swiglu_module = lambda m, cls: calls.append(("swiglu", m))
    for name, mod in (("liger_kernel", types.ModuleType("liger_kernel")), ("liger_kernel.transformers", tr),
                      ("liger_kernel.transformers.monkey_patch", mp)):
        monkeypatch.setitem(sys.modules, name, mod)
    return calls, tr.liger_rotary_pos_emb


def keep_rope(monkeypatch, model):
    """Register the modeling modules' RoPE functions for restore: the patch is module-wide."""
    mods = [sys.modules[n] for n in {type(m).__module__ for m in model.modules()}]
    mods = [m for m in mods if hasattr(m, "apply_rotary_pos_emb")]
    for m in mods:
        monkeypatch.setattr(m, "apply_rotary_pos_emb", m.apply_rotary_pos_emb)
    return mods


def test_liger_needs_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, _ = build_tiny("qwen2_vl", tmp_path, save=False)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        speed.liger_kernels(model)


def test_liger_missing_package_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import fails as if not installed
    model, _ = build_tiny("qwen2_vl", tmp_path, save=False)
    with pytest.raises(UserError, match="pip install liger-kernel"):
        speed.liger_kernels(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_liger_patches_norms_mlps_and_rope_of_the_hf_model_inside_peft(tmp_path, monkeypatch, family):
    from domainvlm.train.tuning import apply_memory_options, apply_tuning

    calls, fake_rope = fake_liger(monkeypatch)
    model, _ = build_tiny(family, tmp_path, save=False)
    rope_mods = keep_rope(monkeypatch, model)
    peft_model = apply_tuning(model, TrainConfig(mode="lora"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # after peft: it probes bitsandbytes' CUDA
    apply_memory_options(peft_model, TrainConfig(mode="lora"))
    assert calls == []  # off by default
    apply_memory_options(peft_model, TrainConfig(mode="lora", liger_kernels=True))
    patched = {k: [m for kk, m in calls if kk == k] for k in ("rms_norm", "layer_norm", "swiglu")}
    # every LM layer's two norms and its MLP, plus the final norm; modules of the transformers model itself
    n_layers = model.config.text_config.num_hidden_layers
    lm_norms = [m for n, m in model.named_modules() if type(m).__name__.endswith("RMSNorm") and "visual" not in n
                and "vision" not in n]
    assert len(lm_norms) == 2 * n_layers + 1 and all(any(m is p for p in patched["rms_norm"]) for m in lm_norms)
    assert len(patched["swiglu"]) >= n_layers
    assert all(any(m is x for x in model.modules()) for m in patched["swiglu"])
    assert rope_mods and any(m.apply_rotary_pos_emb is fake_rope for m in rope_mods)
    if family == "qwen2_vl":  # its vision tower uses LayerNorm, frozen but patched for the forward pass
        assert len(patched["layer_norm"]) >= 2 * model.config.vision_config.depth


def test_liger_with_nothing_to_patch(monkeypatch):
    fake_liger(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(UserError, match="nothing in Linear that Liger"):
        speed.liger_kernels(torch.nn.Linear(2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's kernels need a CUDA GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_liger_loss_and_grads_match_eager_on_gpu(tmp_path, family):
    pytest.importorskip("liger_kernel")
    from test_tuning_speed import batch_for

    torch.manual_seed(0)
    model, proc = build_tiny(family, tmp_path, save=False)
    model = model.cuda().eval()
    b = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch_for(proc).items()}
    c = TrainConfig(packing=True, answer_logits=True)
    ref = speed.step_loss(model, b, c)
    g_ref = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    done = speed.liger_kernels(model)
    assert done["rms_norm"] and done["swiglu"] and done["rope"], done
    got = speed.step_loss(model, b, c)
    g = torch.autograd.grad(got, list(model.parameters()), allow_unused=True)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got.item(), ref.item())
    for a, d in zip(g_ref, g):
        if a is not None:
            assert torch.allclose(a, d, rtol=1e-3, atol=1e-4)
