"""The evidence target's LM part in one lean forward (evidence_tokens.line_targets' numbers, less work).

``line_targets`` runs the HF model twice: the prompt row (with the image and "Diagnosis:"), then the line
tails over its repeated key/value cache. Here the tails are fed in the same row as a *token tree* (each tail
token attends to the prompt row and to its own line's earlier tokens, at the position of its depth, as
confidence.py scores the lines), the decoder layers are called as plain tensor ops on the model's own modules
(its projections, norms' weights and rotary tables; the formulas are HF's Qwen2-VL ones), and the last layer
computes its queries, MLP and logits only at the rows a line's log-probability reads (the prompt row's last
token and the tail tokens); the other rows give it only keys and values. On CPU that is about 40 % less time in
the forward and its backward (13.7 against 23.4 ms, docs/wafer_evidence.md). The same log-probabilities and
gradients as the HF path to float rounding (tests/domains/wafer/test_wafer_evidence_fast.py); :func:`supported`
says when this applies (Qwen2-VL text layers with full attention), else evidence_tokens.line_targets is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.qwen_fast import embed_with_images, mrope_positions


def _text_model(model):
    inner = getattr(model, "model", None)
    return getattr(inner, "language_model", None)


def supported(model) -> bool:
    """Whether the lean forward reproduces this model's LM: Qwen2-VL text layers, full attention only."""
    lm = _text_model(model)
    if lm is None or not hasattr(lm, "rotary_emb") or not hasattr(lm, "layers"):
        return False
    cfg = lm.config
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", False):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False
    attn = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
    mlp = ("gate_proj", "up_proj", "down_proj", "act_fn")
    norms = ("input_layernorm", "post_attention_layernorm")
    return all(all(hasattr(ly.self_attn, k) for k in attn) and all(hasattr(ly.mlp, k) for k in mlp)
               and all(hasattr(getattr(ly, k, None), "variance_epsilon") for k in norms) for ly in lm.layers)


def common_prefix(lines: list[list[int]]) -> int:
    """How many leading tokens all lines share."""
    c = 0
    while all(len(ln) > c + 1 for ln in lines) and len({ln[c] for ln in lines}) == 1:
        c += 1
    return c


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    """Qwen2-VL's RMSNorm (float32 statistics, scaled in the input dtype)."""
    dt = x.dtype
    y = x.float()
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * y.to(dt)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of (B, heads, n, d) by (B, n, d) tables (HF's apply_rotary_pos_emb, one tensor)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _layer(ly, h, cos, sin, mask, rows=None):
    """One decoder layer; ``rows``: its output only at these positions (the keys and values from all)."""
    a, m = ly.self_attn, ly.mlp
    b, n, _ = h.shape
    x = _rms(h, ly.input_layernorm)
    k = _rope(a.k_proj(x).view(b, n, -1, a.head_dim).transpose(1, 2), cos, sin)
    v = a.v_proj(x).view(b, n, -1, a.head_dim).transpose(1, 2)
    if rows is not None:
        h, x, cos, sin, mask = h[:, rows], x[:, rows], cos[:, rows], sin[:, rows], mask[rows]
    r = x.shape[1]
    q = _rope(a.q_proj(x).view(b, r, -1, a.head_dim).transpose(1, 2), cos, sin)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=a.scaling, enable_gqa=True)
    h = h + a.o_proj(o.transpose(1, 2).reshape(b, r, -1))
    y = _rms(h, ly.post_attention_layernorm)
    return h + m.down_proj(m.act_fn(m.gate_proj(y)) * m.up_proj(y))


def _tree(n0: int, tails: list[list[int]]):
    """The line tails as tree tokens after a prompt row of ``n0`` tokens: (fed token ids, each one's line and
    depth, and per line token the row its log-probability is read from, its id, its line)."""
    fed, src, tgt, own = [], [], [], []
    for i, t in enumerate(tails):
        for j, tok in enumerate(t):
            src.append(n0 - 1 if j == 0 else n0 + len(fed) - 1)  # the first from the prompt row's last token
            tgt.append(tok)
            own.append(i)
            if j < len(t) - 1:  # a line's last token is only read, never fed
                fed.append((tok, i, j))
    return fed, src, tgt, own


def _mask(n0: int, line: torch.Tensor) -> torch.Tensor:
    """(n, n) attention: the prompt row causal; a tail token sees the prompt row and its own line's tokens."""
    n = n0 + len(line)
    mask = torch.ones(n, n, dtype=torch.bool, device=line.device).tril()
    mask[n0:, n0:] &= line[:, None] == line[None, :]
    return mask


def tree_targets(head, prompt: list[int], lines: list[list[int]], weights: torch.Tensor, img: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """(n,): ``weights`` (n, len(lines)) @ log p(line), summed over the ``steps`` image token sets ``img``
    (steps * tokens, hidden): evidence_tokens.line_targets in one lean forward."""
    model, dev = head.model, img.device
    lm = _text_model(model)
    c = common_prefix(lines)
    pre = prompt + lines[0][:c]
    n0 = len(pre)
    fed, src, tgt, own = _tree(n0, [ln[c:] for ln in lines])
    ids = torch.tensor([pre + [f[0] for f in fed]] * steps, device=dev)
    s = head.size // head.ip["patch"]
    pos, _ = mrope_positions(ids[:, :n0], head.image_token_id, torch.tensor([[1, s, s]] * steps, device=dev),
                             head.ip["merge"])
    depth = torch.tensor([f[2] for f in fed], device=dev, dtype=torch.long)
    pos = torch.cat([pos, (pos.amax(dim=(0, 2))[:, None] + 1 + depth[None])[None].expand(3, -1, -1)], 2)
    mask = _mask(n0, torch.tensor([f[1] for f in fed], device=dev, dtype=torch.long))
    h = embed_with_images(model, ids, img)
    cos, sin = lm.rotary_emb(h, pos)
    rows = sorted(set(src))
    for ly in lm.layers[:-1]:
        h = _layer(ly, h, cos, sin, mask)
    h = _rms(_layer(lm.layers[-1], h, cos, sin, mask, torch.tensor(rows, device=dev)), lm.norm)
    logp = torch.log_softmax(model.get_output_embeddings()(h).float(), -1)  # (steps, rows, V)
    at = torch.tensor([rows.index(r) for r in src], device=dev)
    lp = logp[:, at, torch.tensor(tgt, device=dev)]  # (steps, line tokens)
    per_line = torch.zeros(steps, len(lines), device=dev).index_add_(1, torch.tensor(own, device=dev), lp)
    return per_line.sum(0) @ weights.to(per_line).T
