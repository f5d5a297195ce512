"""Attribution over the vision tower's tokens: the fast path of :class:`.evidence.Attributor`.

The tower is split after block ``level`` (0 = the patch embedding, ``depth`` = the last block). The map and its
baseline (the same map with every failing die passing) run the blocks before the split once, together and
without gradients; at the default split (``depth``) the map's tokens are those the head's answer just computed
where it kept them (kept_tokens.py), and the baseline's are kept per wafer outline, so the evidence of a map just
answered runs no vision block at all. Integrated gradients are then taken in that token space: ``steps`` points
on the straight line between the two token sets go on through the rest of the tower, its merger and the LM, and a
token's score is the mean gradient dotted with its own difference (map minus baseline), so the scores of a map
add up to its target difference (IG's completeness) and tokens the failing dies do not change score about zero.

The LM target is evidence.py's (each pattern's line over the Normal line). The prompt with the image and the
tokens all lines share ("Diagnosis:") is one LM row per step, the line tails follow it in the same lean forward
as a token tree (evidence_lm.py; :func:`line_targets` is the reference: the HF model over the row, then its
key/value cache repeated for the tails), so one pattern more costs a few LM tokens and one backward (exact: the
same log-probabilities as full padded rows, tests/domains/wafer/test_wafer_evidence_tokens.py and
test_wafer_evidence_fast.py).

Token scores go to dies by :func:`to_dies`: each token's score is shared out over the failing dies of its
patch (a 16-pixel patch is about 4 x 4 dies of a 52-die map).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ...models.qwen_fast import embed_with_images, mrope_positions, patchify
from .evidence_lm import common_prefix, tree_targets
from .render import PALETTE

BASELINES = 16  # all-pass maps whose tokens an attributor keeps (one per wafer outline seen)


def _tiled(vision, grid: tuple, b: int, like: torch.Tensor) -> dict:
    """The captured block arguments of one image, tiled over ``b`` images (as FastVision does)."""
    w = vision._kernel()
    full = w[0].numel() if w is not None else like.shape[1]
    kw0, n = vision._captured(grid, full, like.device, like.dtype)

    def tile(v):
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
            return v.repeat(b, *([1] * (v.ndim - 1)))
        return tuple(tile(x) for x in v) if isinstance(v, tuple) else v

    kw = {k: tile(v) for k, v in kw0.items()}
    kw["cu_seqlens"] = torch.arange(b + 1, device=like.device, dtype=torch.int32) * n
    return kw


def _run_blocks(vision, hs: torch.Tensor, grid: tuple, blocks, per_image: int) -> torch.Tensor:
    if not len(blocks):  # the split after the last block: nothing to run
        return hs
    kw = _tiled(vision, grid, hs.shape[0] // per_image, hs)
    for blk in blocks:
        hs = blk(hs, **kw)
    return hs


def line_targets(head, prompt: list[int], lines: list[list[int]], weights: torch.Tensor, img: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """(n,): the targets ``weights`` (n, len(lines)) @ log p(line), summed over the ``steps`` image token sets
    ``img`` (steps * tokens, hidden)."""
    model, dev = head.model, img.device
    c = common_prefix(lines)
    pre, tails, per = prompt + lines[0][:c], [ln[c:] for ln in lines], len(lines)
    ids = torch.tensor([pre] * steps, device=dev)
    s = head.size // head.ip["patch"]
    pos, _ = mrope_positions(ids, head.image_token_id, torch.tensor([[1, s, s]] * steps, device=dev),
                             head.ip["merge"])
    out = model(inputs_embeds=embed_with_images(model, ids, img), position_ids=pos, use_cache=True,
                logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(per, 0)  # (steps * per, V)
    cache = out["cache"] if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values
    cache.batch_repeat_interleave(per)  # row r = step r // per, line r % per
    T = max(map(len, tails))
    tid = torch.tensor([t + [head.pad_id] * (T - len(t)) for t in tails] * steps, device=dev)
    keep = torch.tensor([[j < len(t) for j in range(T)] for t in tails] * steps, device=dev)
    lp = first.gather(-1, tid[:, :1])
    if T > 1:
        p0 = pos.amax(dim=(0, 2))[0] + 1
        tp = (p0 + torch.arange(T - 1, device=dev))[None, None].expand(3, len(tid), -1)
        rest = model(input_ids=tid[:, :-1], position_ids=tp, use_cache=False,
                     **{head.cache_kw: cache}).logits
        lp = torch.cat([lp, torch.log_softmax(rest.float(), -1).gather(-1, tid[:, 1:, None])[..., 0]], 1)
    line = (lp * keep).sum(-1).view(steps, per)
    return line.sum(0) @ weights.to(line).T


def token_scores(att, image, labels: tuple, lang: str) -> tuple[np.ndarray, np.ndarray]:
    """((n, tokens) IG score per pattern and token, (H, W) failing-pixel mask) at ``att.level``."""
    h, vision = att.head, att.vision
    dev, dtype = h.model.device, next(h.model.parameters()).dtype
    blocks, steps = vision.visual.blocks, att.steps
    rgb = h.rgb_array([image])  # (1, H, W, 3) uint8: the pixels the head's pixel values are made of
    y = PALETTE[2]
    fail_px = (rgb[..., 0] == y[0]) & (rgb[..., 1] == y[1]) & (rgb[..., 2] == y[2])  # 6x .all(-1)'s speed
    base = rgb.copy()
    base[fail_px] = PALETTE[1]
    s = h.size // h.ip["patch"]
    grid, per_image = (1, s, s), s * s
    key = hashlib.blake2b(base.tobytes(), digest_size=16).digest()
    hb = att.baselines.get(key)  # a wafer's all-pass map is shared by all its maps: its tokens are kept
    pv = patchify(torch.from_numpy(rgb).to(dev), **h.patch_ip)
    hm = _kept(att, pv)  # the answer's own tokens of this map, when it was just answered
    todo = ([] if hm is not None else [pv]) + ([] if hb is not None else
                                               [patchify(torch.from_numpy(base).to(dev), **h.patch_ip)])
    if todo:
        with torch.no_grad():
            hs = vision.embed_patches(torch.cat(todo).to(dtype))
            hs = _run_blocks(vision, hs, grid, blocks[:att.level], per_image).float()
        hm = hs[:per_image] if hm is None else hm
    if hb is None:
        hb = att.baselines[key] = hs[-per_image:]
        while len(att.baselines) > BASELINES:
            att.baselines.pop(next(iter(att.baselines)))
    alphas = torch.tensor(att.alphas, device=dev)
    x = (hb + alphas.view(-1, 1, 1) * (hm - hb)).requires_grad_(True)  # (steps, tokens, dim)
    out = _run_blocks(vision, x.reshape(-1, x.shape[-1]).to(dtype), grid, blocks[att.level:], per_image)
    lm_target = tree_targets if att.lean else line_targets
    target = lm_target(h, *att.targets(labels, lang), vision.visual.merger(out), steps)
    g = per_target_grad(target, x).mean(1)  # (n, tokens, dim): IG's mean gradient on the path
    return (g * (hm - hb)).sum(-1).detach().cpu().numpy(), fail_px[0]


def _kept(att, pv: torch.Tensor) -> torch.Tensor | None:
    """The head's kept tower output for these pixel values (kept_tokens.py), where the split is after the
    tower's last block (what the answer computed) and reuse is on; a normal tensor, not an inference one."""
    kept = getattr(att.head, "kept", None)
    if not att.reuse or kept is None or att.level != len(att.vision.visual.blocks):
        return None
    tk = kept.get(pv)
    return None if tk is None else tk.float().clone()


def per_target_grad(target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(n, *x.shape): d target[i] / d x, one backward each over the retained graph (on CPU the vmap'd batched
    backward was several times slower than the loop for two patterns)."""
    n = len(target)
    return torch.stack([torch.autograd.grad(target[i], x, retain_graph=i < n - 1)[0] for i in range(n)])


def token_cells(s: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each of the s x s patch tokens in the vision tower's order (merge blocks, then inside)."""
    q = np.arange(s * s)
    mw, mh = q % merge, (q // merge) % merge
    bw, bh = (q // (merge * merge)) % (s // merge), q // (merge * merge * (s // merge))
    return bh * merge + mh, bw * merge + mw


def to_dies(scores: np.ndarray, fail_px: np.ndarray, dies, patch: int, merge: int) -> np.ndarray:
    """(n, tokens) token scores -> (n, h, w) die scores: each token's score shared out over its failing pixels,
    summed per die (dies.Dies.per_die). A token with no failing pixel gives its score to no die."""
    H, W = fail_px.shape
    s = H // patch
    r, c = token_cells(s, merge)
    cell = np.zeros((len(scores), s, s))
    cell[:, r, c] = scores
    nfail = fail_px[:s * patch, :s * patch].reshape(s, patch, s, patch).sum((1, 3))
    share = np.where(nfail > 0, cell / np.maximum(nfail, 1), 0.0)
    px = np.zeros((len(scores), H, W))
    px[:, :s * patch, :s * patch] = np.repeat(np.repeat(share, patch, 1), patch, 2)
    px *= fail_px
    return np.stack([dies.per_die(p) for p in px])


def token_values(shared: np.ndarray, grid: np.ndarray, dies, patch: int, size: int) -> np.ndarray:
    """Per failing die, the whole score of its token (:func:`to_dies`' share times the failing dies of its
    patch, a die in the patch of its centre): for picking the top die, where a token's share would favour the
    dies of a patch with few failing dies (a cluster's fringe) over its core. ``size``: the canvas side."""
    h, w = grid.shape
    py = dies.canvas_px(dies.top + np.arange(h) * dies.k + dies.k // 2, 0, size) // patch
    px = dies.canvas_px(dies.left + np.arange(w) * dies.k + dies.k // 2, 1, size) // patch
    cell = py[:, None] * (px.max() + 1) + px[None, :]
    n = np.bincount(cell.ravel(), weights=(grid == 2).ravel().astype(float))
    return np.where(grid == 2, shared * n[cell], 0.0)
