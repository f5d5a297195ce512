"""Log-probability of every valid diagnosis line of a wafer map, batched (the wafer head's confidence).

The head's greedy trie walk starts from a prefill of the prompt plus the tokens every line shares
("Diagnosis:"). :func:`line_logprobs` keeps that prefill's key/value tensors (the walk appends to the cache
without touching them) and feeds, in one forward per chunk of maps, every token of the trie below that point
that has a continuation, as a *token tree*: each token attends to the prompt and to its own ancestors only
(a 4-D attention mask) at the position of its depth, so one row per map scores all 38 lines and shared
prefixes are computed once (63 tokens in English instead of 38 padded lines). A line's log-probability is the
sum of its tokens' log-probs: the first from the prefill's last logits, each next from its parent's output.
The probabilities are the model's own over its whole vocabulary; normalised over the valid lines they give the
confidence (:mod:`domainvlm.inference.confidence`).

Test-time augmentation (``tta: true`` in the model config's ``domainvlm`` section, off by default): the
line probabilities of the 8 dihedral views of each map are averaged, and the answer is the most probable line
of the average (no longer the greedy walk).
"""

from __future__ import annotations

import torch

from .canvas import dihedral
from .trie import forced

# tree tokens (maps x fed tokens) per scoring forward: bounds the (maps, tokens, vocab) logits tensor
TOKENS = {"cuda": 32768, "cpu": 4096}


def kv_refs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-layer key/value tensors of a cache as they are now (later updates replace, not modify, them)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(out):
    return out["cache"] if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values


def _tree(root):
    """(fed tokens, their depths, ancestor-or-self mask, per-leaf path [(source, token)]) below the forced
    start of a trie; source 0 is the prefill's last logits, source i+1 the output at fed token i."""
    _, start = forced(root)
    feed, depth, parent, paths = [], [], [], {}
    stack = [(start, 0, 0, [])]  # node, source of its children's log-probs, their depth, path so far
    while stack:
        node, src, d, path = stack.pop()
        if node.leaf is not None:
            paths[node.leaf] = path
            continue
        for t, child in node.children.items():
            if child.children:
                feed.append(t)
                depth.append(d)
                parent.append(src - 1)
                stack.append((child, len(feed), d + 1, path + [(src, t)]))
            else:
                stack.append((child, -1, d + 1, path + [(src, t)]))
    n = len(feed)
    anc = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        j = parent[i]
        while j >= 0:
            anc[i, j] = True
            j = parent[j]
    return feed, depth, anc, paths


class LineTable:
    """Per language: the token tree and, per line in answer-set order, the gather indices of its tokens."""

    def __init__(self, head):
        self.sets = head.tax.answer_sets()
        self.index = {tuple(s): i for i, s in enumerate(self.sets)}
        self.tables, self.device = {}, None
        for lang, root in head.tries.items():
            feed, depth, anc, paths = _tree(root)
            j = max(len(paths[tuple(s)]) for s in self.sets)
            src = torch.zeros((len(self.sets), j), dtype=torch.long)
            tgt = torch.zeros((len(self.sets), j), dtype=torch.long)
            mask = torch.zeros((len(self.sets), j))
            for i, st in enumerate(self.sets):
                for k, (a, t) in enumerate(paths[tuple(st)]):
                    src[i, k], tgt[i, k], mask[i, k] = a, t, 1.0
            self.tables[lang] = (torch.tensor(feed), torch.tensor(depth), anc, src, tgt, mask)

    def on(self, device):
        if self.device != device:
            self.tables = {k: tuple(x.to(device) for x in v) for k, v in self.tables.items()}
            self.device = device
        return self.tables


@torch.inference_mode()
def line_logprobs(head, state: dict, langs: list[str]) -> torch.Tensor:
    """(B, lines) log-probability of each valid line after the prefill in ``state`` (from ``head.diagnose``)."""
    dev = state["logits"].device
    tabs = head.lines.on(dev)
    n = max(len(tabs[lang][0]) for lang in set(langs))
    per = max(1, TOKENS.get(dev.type, 4096) // n)
    return torch.cat([_chunk(head, state, langs, s, min(len(langs), s + per), tabs)
                      for s in range(0, len(langs), per)])


def _chunk(head, state, langs, a, b, tabs) -> torch.Tensor:
    from transformers import DynamicCache

    model, dev = head.model, state["logits"].device
    dtype = state["kv"][0][0].dtype
    rows, n = b - a, max(len(tabs[lang][0]) for lang in set(langs[a:b]))
    feed = torch.full((rows, n), head.pad_id, dtype=torch.long, device=dev)
    depth = torch.zeros((rows, n), dtype=torch.long, device=dev)
    tree = torch.eye(n, dtype=torch.bool, device=dev).repeat(rows, 1, 1)  # padding tokens see themselves
    groups = {lang: torch.tensor([r for r, x in enumerate(langs[a:b]) if x == lang], device=dev)
              for lang in sorted(set(langs[a:b]))}  # rows by language: tensor ops per language, not per row
    for lang, idx in groups.items():
        f, d, anc = tabs[lang][:3]
        k = len(f)
        feed[idx, :k], depth[idx, :k] = f, d
        tree[idx, :k, :k] = anc
    prompt = state["att"][a:b].bool()[:, None, :].expand(rows, n, -1)
    allowed = torch.cat([prompt, tree], -1)[:, None]  # (rows, 1, n, prefill + n)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
    nxt = state["pos"][:, a:b].amax(dim=(0, 2)) + 1
    pos = (nxt[:, None] + depth)[None].expand(3, -1, -1)
    kv = [(k[a:b], v[a:b]) for k, v in state["kv"]]
    out = model(input_ids=feed, attention_mask=mask, position_ids=pos, use_cache=True,
                **{head.cache_kw: DynamicCache(kv)})
    logits = torch.cat([state["logits"][a:b, None], out.logits], 1).float()  # source 0: the prefill
    lp = logits - torch.logsumexp(logits, -1, keepdim=True)
    res = torch.empty((rows, len(head.lines.sets)), device=dev)
    for lang, idx in groups.items():
        src, tgt, m = tabs[lang][3:]
        res[idx] = (lp[idx][:, src, tgt] * m).sum(-1)
    return res


def _view(im, k: int):
    """Dihedral view ``k`` of a picture, or of a die grid not yet drawn (kept a grid: drawn on the device)."""
    from .batch_load import MapCanvas

    if isinstance(im, MapCanvas):
        import numpy as np

        return MapCanvas(np.ascontiguousarray(dihedral(im.grid, k)), im.side)
    return dihedral(im, k)


@torch.inference_mode()
def tta_logprobs(head, images, prompts: list[list[int]], langs: list[str]) -> torch.Tensor:
    """(B, lines) log of the mean over the 8 dihedral views of each map's line distribution (T = 1)."""
    views = [_view(im, k) for im in images for k in range(8)]
    pv, g = head.pixel_values(views)
    seqs, vlangs = [], []
    for p, lang in zip(prompts, langs):
        seqs += [p + forced(head.tries[lang])[0]] * 8
        vlangs += [lang] * 8
    out, att, pos = head._prefill(pv, g, seqs)

    state = {"kv": kv_refs(_cache_of(out)), "logits": out.logits[:, -1], "att": att, "pos": pos}
    lp = line_logprobs(head, state, vlangs)
    probs = torch.softmax(lp, -1).view(len(images), 8, -1).mean(1)
    return probs.clamp_min(1e-30).log()
