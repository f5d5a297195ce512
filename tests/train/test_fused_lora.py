"""The fused LoRA linear computes what peft's lora.Linear computes: outputs and gradients, with and without
dropout, under bf16 autocast, and inside a whole model."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from domainvlm.train.fused_lora import LoraLinearFn, fused_lora, lora_layers


class Two(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.q = nn.Linear(24, 20, bias=bias)
        self.v = nn.Linear(24, 12, bias=False)

    def forward(self, x):
        return self.q(x).sum(-1) + self.v(x).sum(-1) * 0.5


def lora_model(dropout=0.0, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    m = get_peft_model(Two(), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q", "v"], **kw))
    for n, p in m.named_parameters():
        if "lora_B" in n:  # peft starts B at zero: make the adapter matter
            nn.init.normal_(p, std=0.5)
    return m.to(dtype)


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the fused autograd function ran."""
    calls = []
    real = LoraLinearFn.apply
    monkeypatch.setattr(LoraLinearFn, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


def grads(m, x):
    out = m(x).pow(2).sum()
    ps = [p for p in m.parameters() if p.requires_grad]
    return out, torch.autograd.grad(out, [x, *ps])


@pytest.mark.parametrize("bias", [True, False])
def test_fused_matches_peft_outputs_and_gradients(bias, fused_calls):
    m = lora_model()
    if not bias:
        m.base_model.model.q.base_layer.bias = None
    x = torch.randn(3, 5, 24, requires_grad=True)
    ref, g_ref = grads(m, x)
    with fused_lora(m) as n:
        got, g = grads(m, x)
    assert n == 2 and len(fused_calls) == 2  # both layers really took the fused path
    assert torch.allclose(got, ref, rtol=1e-5)
    for a, b in zip(g_ref, g):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert all("forward" not in layer.__dict__ for layer in lora_layers(m))  # peft's forward is back


def test_dropout_mask_is_applied_in_forward_and_backward():
    """Same seed -> same mask: output equals the formula with that mask; gradcheck (float64) sees a function
    whose backward is exact for the mask its forward drew."""
    torch.manual_seed(1)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 8, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    a = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def f(x, a, b):
        torch.manual_seed(7)
        return LoraLinearFn.apply(x, w, bias, a, b, 0.4, 2.0, True)

    torch.manual_seed(7)
    xd, mask = torch.native_dropout(x.detach(), 0.4, True)
    want = x.detach() @ w.t() + bias + 2.0 * (xd @ a.detach().t()) @ b.detach().t()
    assert not mask.all() and mask.any()
    assert torch.allclose(f(x, a, b), want)
    assert torch.autograd.gradcheck(f, (x, a, b))
    # eval mode (training=False) ignores p: no dropout
    y = LoraLinearFn.apply(x, w, bias, a, b, 0.4, 2.0, False)
    assert torch.allclose(y, x @ w.t() + bias + 2.0 * (x @ a.t()) @ b.t())


def test_bf16_autocast_matches_peft_with_bf16_inputs(fused_calls):
    from domainvlm.train.speed import lora_inputs_uncast

    m = lora_model(dropout=0.0).to(torch.bfloat16)
    for n, p in m.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()  # peft keeps adapters in float32 on a bf16 base
    x = torch.randn(4, 24, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with lora_inputs_uncast(m, True):
            ref, g_ref = grads(m, x)
        with fused_lora(m):
            got, g = grads(m, x)
    assert len(fused_calls) == 2
    assert torch.allclose(got.float(), ref.float(), rtol=2e-2)
    for a, b in zip(g_ref, g):
        assert a.dtype == b.dtype  # adapter grads stay float32, input grad bf16
        assert torch.allclose(a.float(), b.float(), rtol=5e-2, atol=5e-2 * a.abs().max().item())


def test_layers_that_do_not_fit_keep_peft_forward(fused_calls):
    m = lora_model(use_dora=True)
    x = torch.randn(2, 24)
    ref = m(x)
    with fused_lora(m):
        got = m(x)
        with m.disable_adapter():
            base = m(x)
    assert fused_calls == [] and torch.allclose(got, ref)  # DoRA: peft's path
    assert not torch.allclose(base, ref)  # disabled adapters still honoured


def test_whole_model_training_step_matches_with_and_without_fusing(tmp_path, fused_calls):
    from domainvlm.models.tiny import build_tiny
    from domainvlm.train import speed
    from domainvlm.train.config import TrainConfig
    from test_tuning_speed import batch_for

    torch.manual_seed(0)
    model, proc = build_tiny("qwen2_vl", tmp_path, save=False)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj", "down_proj"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p, std=0.05)
    b = batch_for(proc)
    out = {}
    for fuse in (False, True):
        c = TrainConfig(mode="lora", packing=True, answer_logits=True, fused_lora=fuse)
        with speed.train_context(model, c):
            loss = speed.step_loss(model, b, c)
            ps = [p for p in model.parameters() if p.requires_grad]
            out[fuse] = (loss, torch.autograd.grad(loss, ps))
        assert len(fused_calls) == (2 * 3 if fuse else 0)  # 2 LM layers x 3 targets, only when asked
    assert torch.allclose(out[True][0], out[False][0], rtol=1e-5)
    for a, c in zip(out[False][1], out[True][1]):
        assert torch.allclose(a, c, rtol=1e-3, atol=1e-6)
