"""Token-level distillation of a teacher's class distribution into the expert's diagnosis line.

The teacher gives q over the recipe's classes (one diagnosis line each). Along the gold line, the line's
j-th token is predicted from the gold prefix; the teacher's conditional distribution of that token is
q restricted to the lines that share the gold prefix up to j, summed per next token and renormalised:
1.0 on tokens every remaining line shares ("Diagnosis:"), q's split at each branching token (" +" or the
newline after "Center": the line's own end token is part of it, as in trie.line_tokens). The loss per
sample is the sum over the line's positions of KL(target || student), the student's distribution at
temperature T over

* ``children`` (default): the trie children of the node, i.e. exactly the tokens the constrained head
  chooses between (head.py). Forced positions have one child and cost nothing, so the whole loss goes into
  the teacher's branching ratios; mass on other tokens is the cross-entropy's business.
* ``vocab``: the whole vocabulary (free decoding sees that distribution); forced positions then add a
  temperature-softened cross-entropy.

The recipe adds ``kd_loss * T^2 *`` (that sum, averaged over the distilled samples of the batch) to the
token-mean cross-entropy; T^2 keeps the gradient scale of the softened term independent of T (Hinton et al.),
and a per-sample sum makes ``kd_loss`` mean what it means in the classify recipe (one decision per sample).

Per language the line tokens and a prefix-match table are built once, so a batch's targets are gathers and a
scatter on the device. Only diagnosis templates (full and short) are distilled: a follow-up's map is the
same but its prompt differs, and an out-of-scope question has no diagnosis line.
"""

from __future__ import annotations

import torch

from ...models.chat_format import IGNORE
from .expert_data import LANGS
from .trie import line_tokens

SUPPORTS = ("children", "vocab")


def line_table(tok, classes: list[str], tax, langs=LANGS) -> dict:
    """``tokens`` (L, C, M) line token ids (-1 past the end), ``length`` (L, C), and ``slot`` (L, C, M, C): for gold
    class g at line position j, for each class c whose line shares g's first j tokens, the index of the first
    such class with c's j-th token (the child's representative), -1 for the other classes."""
    lines = [[line_tokens(tok, tax.canonical(c.split("+")), lang, tax) for c in classes] for lang in langs]
    n_c, m = len(classes), max(len(x) for per in lines for x in per)
    tokens = torch.full((len(langs), n_c, m), -1, dtype=torch.long)
    length = torch.zeros(len(langs), n_c, dtype=torch.long)
    for li, per in enumerate(lines):
        for c, ids in enumerate(per):
            tokens[li, c, :len(ids)] = torch.tensor(ids)
            length[li, c] = len(ids)
    eq = tokens[:, :, None, :] == tokens[:, None, :, :]  # (L, g, c, M); padding (-1) never equals a token
    ones = torch.ones(eq.shape[:-1] + (1,), dtype=torch.long)
    prefix = torch.cat([ones, eq.long().cumprod(-1)[..., :-1]], -1).bool()  # first j tokens equal
    valid = torch.arange(m).view(1, 1, m) < length[:, :, None]  # (L, C, M)
    match = prefix.permute(0, 1, 3, 2) & valid[:, :, :, None] & valid[:, None, :, :].transpose(2, 3)  # (L,g,M,c)
    nxt = tokens.transpose(1, 2)  # (L, M, C): each line's j-th token
    same = (nxt[:, None, :, :, None] == nxt[:, None, :, None, :]) & match[..., None] & match[..., None, :]
    first = same.long().argmax(-1)  # (L, g, M, c): the first matching class with the same next token
    slot = torch.where(match, first, torch.full_like(first, -1))
    return {"tokens": tokens, "length": length, "slot": slot, "langs": tuple(langs)}


def slot_targets(table: dict, lang: torch.Tensor, gold: torch.Tensor, q: torch.Tensor):
    """Targets of the distilled positions of rows with language index ``lang``, gold class ``gold`` and teacher
    probabilities ``q`` (R, C): (row, line position, next-token ids (N, C), representative mask (N, C),
    target mass per slot (N, C)); the mass sits on the representative slots and sums to 1 per position."""
    length = table["length"][lang, gold]
    m, n_c = table["tokens"].shape[2], table["tokens"].shape[1]
    row, j = (torch.arange(m, device=q.device)[None] < length[:, None]).nonzero(as_tuple=True)
    lr, gr = lang[row], gold[row]
    slot = table["slot"][lr, gr, j]  # (N, C)
    tok = table["tokens"][lr[:, None], torch.arange(n_c, device=q.device)[None], j[:, None]].clamp_min(0)
    w = q[row].float() * (slot >= 0)
    mass = torch.zeros_like(w).scatter_add_(1, slot.clamp_min(0), w)
    mass = mass / mass.sum(1, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)
    rep = slot == torch.arange(n_c, device=q.device)[None]
    return row, j, tok, rep, mass


def dense_targets(tok: torch.Tensor, mass: torch.Tensor, vocab: int) -> torch.Tensor:
    """(N, vocab) target distributions from slot_targets' tokens and masses (for inspection and tests)."""
    return torch.zeros(len(tok), vocab, dtype=mass.dtype, device=mass.device).scatter_add_(1, tok, mass)


def kl_positions(z_child: torch.Tensor, rep: torch.Tensor, mass: torch.Tensor, temperature: float,
                 z_all: torch.Tensor | None = None) -> torch.Tensor:
    """KL(target || student) per position; ``z_child`` (N, C) student logits at each slot's token, ``z_all``
    (N, V) the full logits for the vocab support (None: softmax over the trie children only)."""
    z = z_child.float() / temperature
    if z_all is None:
        norm = z.masked_fill(~rep, float("-inf")).logsumexp(1, keepdim=True)
    else:
        norm = (z_all.float() / temperature).logsumexp(1, keepdim=True)
    logp = (z - norm).masked_fill(~rep, 0.0)
    return (torch.xlogy(mass, mass) - mass * logp).sum(1)


class LineKD:
    """The distillation term of the wafer recipe for one set of templates (expert_data.Templates)."""

    def __init__(self, tok, tmpl, classes: list[str], tax, device, temperature: float, support: str = "children"):
        table = line_table(tok, classes, tax)
        self.table = {k: v.to(device) if torch.is_tensor(v) else v for k, v in table.items()}
        self.temperature, self.support = temperature, support
        labels = tmpl.labels.cpu()
        start = torch.full((len(tmpl.kind),), -1, dtype=torch.long)
        for i, (kind, c, lang) in enumerate(zip(tmpl.kind, tmpl.cls, tmpl.lang)):
            if kind not in ("diag", "short"):
                continue
            s = int((labels[i] != IGNORE).nonzero()[0])
            li = LANGS.index(lang)
            n = int(table["length"][li, c])
            if not torch.equal(labels[i, s:s + n], table["tokens"][li, c, :n]):  # the head's lines = the trained ones
                raise RuntimeError(f"template {i} ({classes[c]}, {lang}): diagnosis line tokens differ from trie's")
            start[i] = s - 1  # the logit position that predicts the line's first token
        self.start = start.to(device)
        self.lang = torch.tensor([LANGS.index(x) for x in tmpl.lang], device=device)
        self.cls = torch.tensor(tmpl.cls, device=device).clamp_min(0)

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """How many of the templates ``t`` are distilled."""
        return (self.start[t] >= 0).sum()

    def kl_sum(self, logits: torch.Tensor, keep: torch.Tensor | None, t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Sum over the distilled rows of ``t`` of the line's summed KL. ``logits`` (B, K, V) as train/speed.step_loss
        returns them (``keep``: the positions they are at, None: all), ``q`` (B, C) the teacher's probabilities."""
        rows = (self.start[t] >= 0).nonzero().flatten()
        if not len(rows):
            return logits.new_zeros((), dtype=torch.float32)
        tt = t[rows]
        r, j, tok, rep, mass = slot_targets(self.table, self.lang[tt], self.cls[tt], q[rows])
        b, pos = rows[r], self.start[tt][r] + j
        if keep is not None:  # answer-only logits: every distilled position is a labelled one, so it is kept
            pos = torch.searchsorted(keep, pos)
        z_child = logits[b[:, None], pos[:, None], tok]
        z_all = logits[b, pos] if self.support == "vocab" else None
        return kl_positions(z_child, rep, mass, self.temperature, z_all).sum()
