"""Exact fast paths for Qwen2-VL-family models: the same numbers as the HF code, without its per-sample loops.

* :func:`patchify` turns a batch of RGB images that are already at the model's input size into
  ``pixel_values`` exactly as the Qwen2-VL image processor does (rescale, normalise, patch order).
* :func:`mrope_positions` gives the 3-D rotary positions ``get_rope_index`` computes, vectorised.
* :func:`enable_uniform_vision_attention` makes the vision tower attend over a batch of equally sized
  images with one batched SDPA call per layer instead of one call per image (HF splits by ``cu_seqlens``).

tests/test_qwen_fast.py checks each against the HF implementation.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F


def image_params(processor) -> dict:
    ip = processor.image_processor
    return {"patch": int(ip.patch_size), "merge": int(ip.merge_size), "temporal": int(ip.temporal_patch_size),
            "mean": [float(x) for x in ip.image_mean], "std": [float(x) for x in ip.image_std],
            "scale": float(ip.rescale_factor)}


def patchify(images: torch.Tensor, patch: int, merge: int, temporal: int, mean, std, scale: float) -> torch.Tensor:
    """(B, H, W, 3) uint8 images -> (B * H/p * W/p, 3 * temporal * p * p) float32 pixel_values."""
    b, h, w, c = images.shape
    x = images.permute(0, 3, 1, 2).to(torch.float32) * scale
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    x = (x - m) / s
    gh, gw = h // patch, w // patch
    x = x.reshape(b, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (B, gh/m, gw/m, mh, mw, C, ph, pw)
    x = x.unsqueeze(6).expand(*x.shape[:6], temporal, patch, patch)
    return x.reshape(b * gh * gw, c * temporal * patch * patch)


def mrope_positions(input_ids: torch.Tensor, image_token_id: int, grid_thw: torch.Tensor, merge: int,
                    attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, B, L) positions and (B, 1) deltas as Qwen2-VL's ``get_rope_index`` (images only, t=1 each).

    Text tokens count up by one on all three axes; the tokens of an image (gh x gw after merging) get
    (start, start + row, start + col), and the text after it resumes at start + max(gh, gw).
    Padding (attention_mask 0) gets position 0, as in HF.
    """
    bsz, n = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_img = (input_ids == image_token_id) & mask
    g = grid_thw.tolist()
    n_img = is_img.sum(1)
    if len(g) == bsz and all(x == g[0] for x in g) and g[0][0] == 1 and bool((n_img == n_img[0]).all()):
        return _mrope_one_image(mask, is_img, g[0][1] // merge, g[0][2] // merge)
    return _mrope_loop(input_ids, mask, is_img, g, merge)


def _mrope_one_image(mask, is_img, gh: int, gw: int):
    """Vectorised case: every row holds one image of the same grid."""
    c = mask.long().cumsum(1) - 1  # index among the row's real tokens
    first = torch.where(is_img, c, torch.full_like(c, 1 << 30)).amin(1, keepdim=True)
    k = c - first
    n_img = gh * gw
    text_before = c < first
    in_img = (k >= 0) & (k < n_img)
    base = torch.where(text_before, c, c - n_img + max(gh, gw))
    pos = torch.stack([torch.where(in_img, first, base),
                       torch.where(in_img, first + k // gw, base),
                       torch.where(in_img, first + k % gw, base)])
    pos = pos.masked_fill(~mask.unsqueeze(0), 0)
    deltas = pos.amax(dim=(0, 2)).unsqueeze(1) + 1 - mask.sum(1, keepdim=True)
    return pos, deltas


def _mrope_loop(input_ids, mask, is_img, grids, merge):
    bsz, n = input_ids.shape
    dev = input_ids.device
    pos = torch.zeros(3, bsz, n, dtype=torch.long, device=dev)
    deltas = torch.zeros(bsz, 1, dtype=torch.long, device=dev)
    k = 0
    for b in range(bsz):
        valid = mask[b].nonzero().flatten()
        img = is_img[b, valid]
        # run starts: an image run begins where is_img switches on
        starts = (img & ~torch.cat([img.new_zeros(1), img[:-1]])).nonzero().flatten().tolist()
        p = torch.empty(3, len(valid), dtype=torch.long, device=dev)
        cur, prev = 0, 0
        for s in starts:
            t, gh, gw = grids[k]
            k += 1
            gh, gw = gh // merge, gw // merge
            p[:, prev:s] = torch.arange(cur, cur + s - prev, device=dev)
            cur += s - prev
            hh = torch.arange(gh, device=dev).repeat_interleave(gw).repeat(t)
            ww = torch.arange(gw, device=dev).repeat(gh * t)
            tt = torch.arange(t, device=dev).repeat_interleave(gh * gw)
            p[0, s:s + t * gh * gw] = tt + cur
            p[1, s:s + t * gh * gw] = hh + cur
            p[2, s:s + t * gh * gw] = ww + cur
            cur += max(gh, gw, t)
            prev = s + t * gh * gw
        p[:, prev:] = torch.arange(cur, cur + len(valid) - prev, device=dev)
        pos[:, b, valid] = p
        deltas[b, 0] = (p.max() + 1 - len(valid)) if len(valid) else 0
    return pos, deltas


def _apply_rope(q, k, cos, sin):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision(q, k, cos, sin)


def _uniform_len(cu_seqlens: torch.Tensor) -> int | None:
    cached = getattr(cu_seqlens, "_dv_uniform", False)
    if cached is not False:
        return cached
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    val = int(lengths[0]) if len(lengths) and bool((lengths == lengths[0]).all()) else None
    try:
        cu_seqlens._dv_uniform = val
    except (AttributeError, RuntimeError):
        pass
    return val


def _uniform_attn_forward(self, hidden_states, cu_seqlens, *args, position_embeddings=None, rotary_pos_emb=None,
                          **kwargs):
    n_img_len = _uniform_len(cu_seqlens)
    if n_img_len is None or args:
        if position_embeddings is not None:
            kwargs["position_embeddings"] = position_embeddings
        if rotary_pos_emb is not None:
            kwargs["rotary_pos_emb"] = rotary_pos_emb
        return self._dv_orig_forward(hidden_states, cu_seqlens, *args, **kwargs)
    seq = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    if position_embeddings is None:  # older transformers pass raw rotary angles
        emb = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
        position_embeddings = (emb.cos(), emb.sin())
    cos, sin = position_embeddings
    q, k = _apply_rope(q, k, cos, sin)
    nb = seq // n_img_len
    q, k, v = (t.reshape(nb, n_img_len, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)
    return self.proj(out.transpose(1, 2).reshape(seq, -1))


def enable_uniform_vision_attention(model) -> int:
    """Patch the vision attention modules of this model instance (idempotent). Returns how many were patched.

    Images of different sizes in one batch fall back to the original per-image path.
    """
    n = 0
    for mod in model.modules():
        if type(mod).__name__ == "VisionAttention" and hasattr(mod, "qkv") and hasattr(mod, "proj"):
            if not hasattr(mod, "_dv_orig_forward"):
                mod._dv_orig_forward = mod.forward
                mod.forward = types.MethodType(_uniform_attn_forward, mod)
            n += 1
    return n


class _Stop(Exception):
    pass


class FastVision:
    """The model's vision tower for a batch of images that share one grid, without per-image Python loops.

    The rotary tables and block arguments are captured once from the model's own forward on one image
    (so this follows whatever the installed transformers computes), tiled over the batch, and the blocks
    and merger are called directly. :meth:`check` compares against the plain tower.
    """

    def __init__(self, model):
        self.visual = model.model.visual if hasattr(model, "model") and hasattr(model.model, "visual") else model.visual
        self._cache: dict = {}
        enable_uniform_vision_attention(model)

    def _captured(self, grid: tuple, patch_dim: int, device, dtype):
        key = (grid, str(device), dtype)
        if key not in self._cache:
            got = {}

            def hook(mod, args, kwargs):
                got["kwargs"] = dict(kwargs)
                raise _Stop

            h = self.visual.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
            n = grid[0] * grid[1] * grid[2]
            try:
                self.visual(torch.zeros(n, patch_dim, device=device, dtype=dtype),
                            grid_thw=torch.tensor([list(grid)], device=device))
            except _Stop:
                pass
            finally:
                h.remove()
            self._cache[key] = (got["kwargs"], n)
        return self._cache[key]

    def _kernel(self):
        """The patch embedding's Conv3d weight (D, C, T, p, p), or None for another kind of embedding."""
        proj = getattr(self.visual.patch_embed, "proj", None)
        w = getattr(proj, "weight", None)
        return w if isinstance(proj, torch.nn.Conv3d) and proj.bias is None and w.ndim == 5 else None

    def embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The patch embedding as one matmul (a stride = kernel Conv3d is a linear map; on CPU the conv is
        about 6x slower). Single-frame patches (C*p*p, from ``patchify(..., temporal=1)``) use the kernel
        summed over its time axis: the processor repeats a still image over the T frames, so this is the
        same map on 1/T of the input."""
        w = self._kernel()
        if w is None:
            return self.visual.patch_embed(pixel_values)
        x = pixel_values.to(w.dtype)
        if x.shape[1] == w[0].numel():
            return x @ w.flatten(1).T
        if x.shape[1] * w.shape[2] == w[0].numel():
            return x @ w.sum(2).flatten(1).T
        raise ValueError(f"pixel_values rows of {x.shape[1]} values fit neither {w[0].numel()} nor "
                         f"{w[0].numel() // w.shape[2]} (one frame)")

    def __call__(self, pixel_values: torch.Tensor, grid: tuple) -> torch.Tensor:
        """pixel_values of B images with the same (t, h, w) grid -> merged image embeddings (B * tokens, hidden).
        Rows are full patches (C*T*p*p, as the processor makes them) or single frames (C*p*p)."""
        return self.visual.merger(self.tokens(pixel_values, grid))

    def tokens(self, pixel_values: torch.Tensor, grid: tuple) -> torch.Tensor:
        """The tower's tokens after its last block, before the patch merger (B * patches, embed_dim)."""
        grid = tuple(int(x) for x in grid)
        w = self._kernel()
        full = w[0].numel() if w is not None else pixel_values.shape[1]
        kw0, n = self._captured(grid, full, pixel_values.device, pixel_values.dtype)
        b = pixel_values.shape[0] // n

        def tile(v):
            if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
                return v.repeat(b, *([1] * (v.ndim - 1)))
            if isinstance(v, tuple):
                return tuple(tile(x) for x in v)
            return v

        kw = {k: tile(v) for k, v in kw0.items()}
        kw["cu_seqlens"] = torch.arange(b + 1, device=pixel_values.device, dtype=torch.int32) * n
        hs = self.embed_patches(pixel_values)
        for blk in self.visual.blocks:
            hs = blk(hs, **kw)
        return hs

    @torch.no_grad()
    def check(self, pixel_values: torch.Tensor, grid: tuple, atol: float = 1e-4) -> float:
        """Max abs difference to the plain vision tower (raises if above ``atol``).

        Both sides run in full float32 (TF32 off for matmuls and convolutions, restored afterwards): the check
        is about the algorithm, and TF32 rounds the matmul and the HF tower's Conv3d differently (7e-3 on an
        H200 under a recipe's ``allow_tf32``), which says nothing about either path being wrong."""
        with _full_fp32():
            return self._check(pixel_values, grid, atol)

    def _check(self, pixel_values, grid, atol):
        b = pixel_values.shape[0] // (grid[0] * grid[1] * grid[2])
        w, full = self._kernel(), pixel_values
        if w is not None and pixel_values.shape[1] * w.shape[2] == w[0].numel():  # one frame: repeat it over T
            c, t, p = w.shape[1], w.shape[2], w.shape[3]
            full = pixel_values.view(-1, c, 1, p, p).expand(-1, c, t, p, p).reshape(-1, c * t * p * p)
        ref = self.visual(full, grid_thw=torch.tensor([list(grid)] * b, device=pixel_values.device))
        ref = getattr(ref, "pooler_output", ref)
        if isinstance(ref, (list, tuple)):
            ref = torch.cat(list(ref))
        diff = (ref.float() - self(pixel_values, grid).float()).abs().max().item()
        if diff > atol:
            raise RuntimeError(f"fast vision path differs from the model's by {diff:.2e}")
        return diff


@contextlib.contextmanager
def _full_fp32():
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def embed_with_images(model, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
    """Token embeddings with the image placeholder tokens replaced by ``image_embeds`` (in order)."""
    emb = model.get_input_embeddings()(input_ids)
    mask = (input_ids == model.config.image_token_id).unsqueeze(-1)
    return emb.masked_scatter(mask, image_embeds.to(emb.dtype))
