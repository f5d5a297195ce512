"""Packing and answer-only logits compute the same loss (and gradients) as the plain padded forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from domainvlm.models.chat_format import collate, encode_train
from domainvlm.models.tiny import FAMILIES, build_tiny
from domainvlm.models.varlen_attention import _configs
from domainvlm.train import speed
from domainvlm.train.config import TrainConfig

ANSWERS = ["Heart size is normal.", "There is a small left pleural effusion with basal atelectasis; lungs clear.",
           "No."]


def batch_for(proc):
    rng = np.random.default_rng(0)
    encs = []
    for i, a in enumerate(ANSWERS):
        img = Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8"))
        q = "<image>\nDescribe the findings." + " Be brief." * i  # different prompt lengths too
        encs.append(encode_train(proc, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], [img]))
    return collate(encs, proc.tokenizer.pad_token_id)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_and_answer_only_losses_match_padded(tmp_path, family, monkeypatch):
    from domainvlm.models import varlen_attention as va

    calls = []
    real = va.attention
    monkeypatch.setattr(va, "attention", lambda m, *a, **k: calls.append(k.get("cu_seq_lens_q") is not None)
                        or real(m, *a, **k))
    torch.manual_seed(0)
    model, proc = build_tiny(family, tmp_path, save=False)
    model.eval()  # no dropout: the comparison is exact up to float rounding
    b = batch_for(proc)
    assert (b["attention_mask"] == 0).any()  # the batch really is padded
    ref = model(**b).loss
    for opts in (dict(answer_logits=True), dict(packing=True), dict(packing=True, answer_logits=True),
                 dict(packing=True, answer_logits=True, attn_implementation="varlen")):
        with speed.train_context(model, cfg(**opts)):
            got = speed.step_loss(model, b, cfg(**opts))
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (opts, got.item(), ref.item())
    # gradients agree too (packing changes the attention layout, not the function)
    g_ref = torch.autograd.grad(ref, [p for p in model.parameters()], allow_unused=True)
    for opts in (dict(packing=True, answer_logits=True), dict(packing=True, attn_implementation="varlen")):
        with speed.train_context(model, cfg(**opts)):
            got = speed.step_loss(model, b, cfg(**opts))
            g = torch.autograd.grad(got, [p for p in model.parameters()], allow_unused=True)
        for a, c in zip(g_ref, g):
            if a is not None:
                assert torch.allclose(a, c, rtol=1e-3, atol=1e-5), opts
    assert all(c._attn_implementation == "sdpa" for c in _configs(model))  # switched back after the forward
    n_layers = model.config.get_text_config().num_hidden_layers
    assert len(calls) >= 2 * n_layers  # the varlen forwards really ran through it (LM layers at least)
    if family != "llava":
        assert any(calls)  # Qwen vision towers: all images in one call from their cu_seqlens


def test_packing_really_isolates_samples(tmp_path):
    """Negative control: without per-sample position resets, samples attend to each other and the loss moves."""
    torch.manual_seed(0)
    model, proc = build_tiny("llava", tmp_path, save=False)
    model.eval()
    b = batch_for(proc)
    targets = speed.shifted_targets(b["labels"])
    packed, t = speed.pack(model, {k: v for k, v in b.items() if k != "labels"}, targets)
    good = speed.step_loss(model, b, cfg(packing=True))
    packed["position_ids"] = torch.arange(packed["input_ids"].shape[1])[None]  # one long sequence
    logits = model(**packed, use_cache=False).logits
    bad = torch.nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten(), ignore_index=-100)
    assert abs(bad.item() - good.item()) > 1e-3


def test_no_labelled_token_gives_zero_loss_with_graph(tmp_path):
    model, proc = build_tiny("qwen2_vl", tmp_path, save=False)
    b = batch_for(proc)
    b["labels"] = torch.full_like(b["labels"], -100)
    loss = speed.step_loss(model, b, cfg(packing=True, answer_logits=True))
    assert loss.item() == 0.0 and loss.requires_grad


def test_rank_weight_turns_per_rank_means_into_the_global_token_mean():
    """DDP/FSDP average per-rank gradients; weighting each rank's token-mean loss by world*n_rank/n_global makes
    that average the token mean over the whole global batch - what one GPU computes."""
    per_rank = [torch.tensor([[-100, 1, 2, 3, -100]]), torch.tensor([[-100, 4, -100, -100, -100]])]
    losses = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0])]  # per-token losses of each rank's answers

    class FakeAcc:
        num_processes = 2

        def reduce(self, t, op):
            assert op == "sum"
            return sum((lab[:, 1:] != -100).sum().float() for lab in per_rank)

    weighted = [speed.rank_weight(FakeAcc(), {"labels": lab}) * lo.mean() for lab, lo in zip(per_rank, losses)]
    averaged = sum(weighted) / 2  # what gradient averaging over the two ranks amounts to
    assert torch.isclose(averaged, torch.cat(losses).mean())  # 4.0, not the mean of means 6.0


def test_varlen_and_bf16_lora_inputs_survive_checkpointed_training(tmp_path):
    """Checkpointed layers re-run their forward inside backward: it must see the same attention and casting
    (a mismatch raises CheckpointError). bf16 autocast on CPU exercises the LoRA-input path of the GPU."""
    import json

    from domainvlm.train.trainer import train

    torch.manual_seed(0)
    model, proc = build_tiny("qwen2_vl", tmp_path / "m", save=False)
    rng = np.random.default_rng(0)
    rows = []
    for i, a in enumerate(ANSWERS * 2):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(tmp_path / f"{i}.png")
        rows.append({"id": str(i), "images": [f"{i}.png"], "messages": [
            {"role": "user", "content": "<image>\nDescribe the findings."}, {"role": "assistant", "content": a}]})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = TrainConfig(data=str(tmp_path / "d.jsonl"), output_dir=str(tmp_path / "run"), mode="lora", max_steps=2,
                    batch_size=3, lr=1e-3, eval_every=0, eval_samples=0, save_every=0, precision="bf16",
                    packing=True, answer_logits=True, attn_implementation="varlen", gradient_checkpointing=1.0)
    losses = []
    res = train(c, progress=False, model=model, processor=proc, on_step=lambda s, loss, b: losses.append(loss.item()))
    assert res["steps"] == 2 and len(losses) == 2 and np.isfinite(losses).all()
    assert all(getattr(m, "cast_input_dtype_enabled", True) for m in model.modules())  # restored after training
