"""Log-probability of every valid diagnosis line of a wafer map, batched (the wafer head's confidence).

The head's greedy trie walk starts from a prefill of the prompt plus the tokens every line shares
("Diagnosis:"). :func:`line_logprobs` keeps that prefill's key/value tensors (the walk appends to the cache
without touching them), repeats them for the 38 lines and scores all line continuations in one padded forward
per chunk of maps: token 0 from the prefill's last logits, token i from position i-1 of the forward. The
probabilities are the model's own over its whole vocabulary; normalised over the valid lines they give the
confidence (:mod:`domainvlm.inference.confidence`).

Test-time augmentation (``tta: true`` in the model config's ``domainvlm`` section, off by default): the
line probabilities of the 8 dihedral views of each map are averaged, and the answer is the most probable line
of the average (no longer the greedy walk).
"""

from __future__ import annotations

import torch

from .canvas import dihedral

# candidate rows (maps x lines) per scoring forward: bounds the (rows, tokens, vocab) logits tensor
ROWS = {"cuda": 4096, "cpu": 1024}


def kv_refs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-layer key/value tensors of a cache as they are now (later updates replace, not modify, them)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class LineTable:
    """Per language: the line continuations after the shared forced prefix, padded, in answer-set order."""

    def __init__(self, head):
        from .head import _forced, _line_tokens

        self.sets = head.tax.answer_sets()
        self.tables = {}
        for lang, root in head.tries.items():
            n = len(_forced(root)[0])
            sfx = [_line_tokens(head.tok, d, lang, head.tax)[n:] for d in self.sets]
            t = max(1, max(len(s) for s in sfx) - 1)
            feed = torch.full((len(sfx), t), head.pad_id, dtype=torch.long)
            tgt = torch.zeros((len(sfx), t), dtype=torch.long)
            mask = torch.zeros((len(sfx), t), dtype=torch.long)
            for i, s in enumerate(sfx):
                feed[i, :len(s) - 1] = torch.tensor(s[:-1], dtype=torch.long)
                tgt[i, :len(s) - 1] = torch.tensor(s[1:], dtype=torch.long)
                mask[i, :len(s) - 1] = 1
            first = torch.tensor([s[0] for s in sfx], dtype=torch.long)
            self.tables[lang] = (first, feed, tgt, mask)
        self.index = {tuple(s): i for i, s in enumerate(self.sets)}
        self.device = None

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
    n_l = len(head.lines.sets)
    per = max(1, ROWS.get(dev.type, 1024) // n_l)
    out = []
    for s in range(0, len(langs), per):
        out.append(_chunk(head, state, langs, s, min(len(langs), s + per), tabs, n_l))
    return torch.cat(out)


def _chunk(head, state, langs, a, b, tabs, n_l) -> torch.Tensor:
    from transformers import DynamicCache

    model, dev = head.model, state["logits"].device
    rows = b - a
    t = max(tabs[lang][1].shape[1] for lang in set(langs[a:b]))
    pad = lambda x, v: torch.nn.functional.pad(x, (0, t - x.shape[1]), value=v)  # noqa: E731
    first = torch.stack([tabs[lang][0] for lang in langs[a:b]])  # (rows, lines)
    feed = torch.cat([pad(tabs[lang][1], head.pad_id) for lang in langs[a:b]])  # (rows*lines, t)
    tgt = torch.cat([pad(tabs[lang][2], 0) for lang in langs[a:b]])
    mask = torch.cat([pad(tabs[lang][3], 0) for lang in langs[a:b]])
    lp0 = torch.log_softmax(state["logits"][a:b].float(), -1).gather(1, first)  # (rows, lines)
    kv = [(k[a:b].repeat_interleave(n_l, 0), v[a:b].repeat_interleave(n_l, 0)) for k, v in state["kv"]]
    att = torch.cat([state["att"][a:b].repeat_interleave(n_l, 0), mask], 1)
    nxt = (state["pos"][:, a:b].amax(dim=(0, 2)) + 1).repeat_interleave(n_l)
    pos = (nxt[:, None] + torch.arange(t, device=dev)[None])[None].expand(3, -1, -1)
    out = model(input_ids=feed, attention_mask=att, position_ids=pos, use_cache=True,
                **{head.cache_kw: DynamicCache(kv)})
    logits = out.logits.float()
    tok_lp = logits.gather(-1, tgt[..., None])[..., 0] - torch.logsumexp(logits, -1)
    rest = (tok_lp * mask).sum(-1).view(rows, n_l)
    return lp0 + rest


@torch.inference_mode()
def tta_logprobs(head, images, prompts: list[list[int]], langs: list[str]) -> torch.Tensor:
    """(B, lines) log of the mean over the 8 dihedral views of each map's line distribution (T = 1)."""
    views = [dihedral(im, k) for im in images for k in range(8)]
    pv, g = head.pixel_values(views)
    from .head import _forced, _out_cache

    seqs, vlangs = [], []
    for p, lang in zip(prompts, langs):
        seqs += [p + _forced(head.tries[lang])[0]] * 8
        vlangs += [lang] * 8
    out, att, pos = head._prefill(pv, g, seqs)

    state = {"kv": kv_refs(_out_cache(out)), "logits": out.logits[:, -1], "att": att, "pos": pos}
    lp = line_logprobs(head, state, vlangs)
    probs = torch.softmax(lp, -1).view(len(images), 8, -1).mean(1)
    return probs.clamp_min(1e-30).log()
