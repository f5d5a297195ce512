"""The exact fast paths (models/qwen_fast.py) give the same numbers as the HF Qwen2-VL code."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from domainvlm.models.loader import load_model

    return load_model(tiny_model_dir, device="cpu")


def _batch(proc, n=3, two_images=False):
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map
    from domainvlm.models.chat_format import collate, encode_prompt

    rng = np.random.default_rng(0)
    encs, imgs = [], []
    for i in range(n):
        ims = [render_map(synth_map(("Loc",), 32, rng), size=32) for _ in range(2 if two_images else 1)]
        text = "<image>\n" * len(ims) + "What defect?" + " really" * (2 * i)
        encs.append(encode_prompt(proc, [{"role": "user", "content": text}], ims))
        imgs += ims
    return collate(encs, proc.tokenizer.pad_token_id), imgs


def test_patchify_equals_the_image_processor(tiny):
    from domainvlm.models.qwen_fast import image_params, patchify

    _, proc = tiny
    b, imgs = _batch(proc)
    pv = patchify(torch.from_numpy(np.stack([np.asarray(i) for i in imgs])), **image_params(proc))
    assert pv.shape == b["pixel_values"].shape
    assert torch.allclose(pv, b["pixel_values"].float(), atol=1e-6)


@pytest.mark.parametrize("two_images", [False, True])
def test_mrope_positions_equal_get_rope_index(tiny, two_images):
    from domainvlm.models.qwen_fast import mrope_positions

    model, proc = tiny
    b, _ = _batch(proc, two_images=two_images)
    pos, d = mrope_positions(b["input_ids"], model.config.image_token_id, b["image_grid_thw"],
                             proc.image_processor.merge_size, b["attention_mask"])
    kw = {k: b[k] for k in ("mm_token_type_ids",) if k in b}
    ref, dref = model.model.get_rope_index(b["input_ids"], image_grid_thw=b["image_grid_thw"],
                                           attention_mask=b["attention_mask"], **kw)
    assert torch.equal(pos, ref) and torch.equal(d.view(-1), dref.view(-1))


def test_fast_vision_and_embeddings_match_the_model(tiny):
    from domainvlm.models.qwen_fast import FastVision, embed_with_images, mrope_positions

    model, proc = tiny
    b, _ = _batch(proc)
    grid = tuple(b["image_grid_thw"][0].tolist())
    fv = FastVision(model)
    assert fv.check(b["pixel_values"], grid) < 1e-5
    pos, _ = mrope_positions(b["input_ids"], model.config.image_token_id, b["image_grid_thw"], 2, b["attention_mask"])
    with torch.no_grad():
        ref = model(**b).logits
        emb = embed_with_images(model, b["input_ids"], fv(b["pixel_values"], grid))
        got = model(inputs_embeds=emb, attention_mask=b["attention_mask"], position_ids=pos).logits
    assert torch.allclose(ref, got, atol=1e-5)


def test_single_frame_patches_give_the_same_embeddings(tiny):
    """patchify(temporal=1) + the time-summed kernel equals the processor's repeated frames through the Conv3d."""
    from domainvlm.models.qwen_fast import FastVision, image_params, patchify

    model, proc = tiny
    b, imgs = _batch(proc)
    grid = tuple(b["image_grid_thw"][0].tolist())
    ip = image_params(proc)
    arr = torch.from_numpy(np.stack([np.asarray(i) for i in imgs]))
    one = patchify(arr, **dict(ip, temporal=1))
    fv = FastVision(model)
    assert ip["temporal"] == 2 and one.shape[1] * 2 == b["pixel_values"].shape[1]
    with torch.no_grad():
        conv = fv.visual.patch_embed(b["pixel_values"])
        assert torch.allclose(fv.embed_patches(b["pixel_values"]), conv, atol=1e-5)  # the matmul form
        assert torch.allclose(fv.embed_patches(one), conv, atol=1e-5)  # folded over time
        assert fv.check(one, grid) < 1e-5  # whole tower vs the plain one on the repeated frames
    with pytest.raises(ValueError, match="fit neither"):
        fv.embed_patches(one[:, :-1])


def test_uniform_attention_is_used_for_equal_images(tiny, monkeypatch):
    import torch.nn.functional as F

    from domainvlm.models import qwen_fast

    model, proc = tiny
    assert qwen_fast.enable_uniform_vision_attention(model) == model.config.vision_config.depth
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(qwen_fast.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    b, _ = _batch(proc)
    with torch.no_grad():
        model.model.visual(b["pixel_values"], grid_thw=b["image_grid_thw"])
    assert calls and all(s[0] == 3 for s in calls)  # one batched call per layer over the 3 images


def test_fast_vision_check_runs_in_full_fp32_and_restores_tf32_flags(tiny):
    """The check compares algorithms: TF32 is off inside it (a recipe's allow_tf32 made the H200 differ by
    7e-3 between the matmul and the HF Conv3d) and the caller's flags come back afterwards, also on error."""
    from domainvlm.models.qwen_fast import FastVision

    model, proc = tiny
    b, _ = _batch(proc)
    grid = tuple(b["image_grid_thw"][0].tolist())
    fv = FastVision(model)
    seen = {}
    real = fv._check

    def spy(*a):
        seen["flags"] = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        return real(*a)

    fv._check = spy
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        assert fv.check(b["pixel_values"], grid) < 1e-5
        assert seen["flags"] == (False, False)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        with pytest.raises(RuntimeError, match="differs"):
            fv.check(b["pixel_values"], grid, atol=-1.0)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
