"""Evidence: which dies make the wafer expert name each pattern, read from the model itself.

For each named pattern P of a diagnosis L the target is the model's preference for the line that names P over
the same line without it: ``log p(line L) - log p(line L minus P)`` (for a single pattern: against "Normal"),
both teacher-forced on the same map and the standard question. Its gradient with respect to the canvas pixels,
taken along the pass -> fail colour direction and summed over each die's pixels, is gradient x input with a
"this die passes" baseline: zero on passing and off-wafer dies, and for a failing die how much its failing
pushes the model towards naming P. The other named patterns are in both lines, so they cancel.

One forward and one backward for all patterns of a map (the canvas is repeated once per pattern in the batch).
Per-die scores are smoothed over failing neighbours (clusters, not single pixels, make a pattern), and the
failing dies scoring at least ``REL`` of the best form the pattern's die mask. :func:`describe` puts it in words.
"""

from __future__ import annotations

import numpy as np
import torch

from ...models.qwen_fast import FastVision, embed_with_images, mrope_positions, patchify
from .dies import read_dies
from .evidence_words import describe
from .head import _line_tokens
from .instruct import QUESTIONS
from .render import PALETTE

REL = 0.3  # share of the best smoothed score a failing die needs to join the mask (chosen on seed 1, bench)


def _smooth(score: np.ndarray, fail: np.ndarray) -> np.ndarray:
    """Mean of the score over the failing dies of each die's 3 x 3 neighbourhood (failing dies only)."""
    s = np.where(fail, score, 0.0)
    pad_s, pad_f = np.pad(s, 1), np.pad(fail.astype(float), 1)
    h, w = s.shape
    tot = sum(pad_s[i:i + h, j:j + w] for i in range(3) for j in range(3))
    cnt = sum(pad_f[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return np.where(fail, tot / np.maximum(cnt, 1), 0.0)


class Attributor:
    """Per-die attribution of each named pattern for one wafer head (``head``: a :class:`.head.WaferHead`)."""

    def __init__(self, head, mode: str = "normal", steps: int = 1):
        self.head, self.mode, self.steps = head, mode, steps
        self.vision = FastVision(head.model)  # its own captured tables: the head's may be inference tensors
        self.direction = torch.tensor(np.subtract(PALETTE[2], PALETTE[1]), dtype=torch.float32)

    def _seqs(self, labels: tuple, lang: str) -> tuple[list[int], list[list[int]]]:
        h = self.head
        prompt = h.prompt_ids([{"role": "user", "content": f"<image>\n{QUESTIONS[lang][0]}"}])
        lines = []
        for p in labels:
            if self.mode == "drop":
                lines.append(_line_tokens(h.tok, labels, lang, h.tax))
                lines.append(_line_tokens(h.tok, tuple(x for x in labels if x != p), lang, h.tax))
            else:
                lines.append(_line_tokens(h.tok, (p,), lang, h.tax))
                lines.append(_line_tokens(h.tok, (), lang, h.tax))
        return prompt, lines

    def pixel_scores(self, image, labels: tuple, lang: str = "en") -> np.ndarray:
        """(len(labels), H, W) d target / d pixel along the pass -> fail colour, one row per pattern."""
        with torch.inference_mode(False), torch.enable_grad():  # the engine answers under inference_mode
            return self._pixel_scores(image, labels, lang)

    def _pixel_scores(self, image, labels, lang):
        h, model = self.head, self.head.model
        dev, dtype = model.device, next(model.parameters()).dtype
        n = len(labels)
        prompt, lines = self._seqs(labels, lang)
        rgb = torch.from_numpy(h.rgb_array([image])).to(dev, torch.float32)
        steps = self.steps
        fail = (rgb == torch.tensor(PALETTE[2], device=dev, dtype=torch.float32)).all(-1, keepdim=True)
        base = torch.where(fail, torch.tensor(PALETTE[1], device=dev, dtype=torch.float32), rgb)
        alphas = torch.tensor([(j + 0.5) / steps for j in range(steps)] if steps > 1 else [1.0], device=dev)
        path = base + alphas.view(-1, 1, 1, 1) * (rgb - base)  # (steps, H, W, 3): integrated gradients
        x = path.repeat(n, 1, 1, 1).requires_grad_(True)  # one copy per pattern and step: separate gradients
        pv = patchify(x, **h.patch_ip)
        s = h.size // h.ip["patch"]
        n_rows = n * steps
        g = torch.tensor([[1, s, s]] * n_rows, device=dev)
        if True:
            img = self.vision(pv.to(dtype), (1, s, s))  # (n * steps * tokens, hidden)
            img = img.view(n_rows, -1, img.shape[-1]).repeat_interleave(2, dim=0).reshape(-1, img.shape[-1])
            lines = [lines[2 * i + t] for i in range(n) for _ in range(steps) for t in (0, 1)]  # rows' order
            L = len(prompt) + max(map(len, lines))
            ids = torch.tensor([prompt + ln + [h.pad_id] * (L - len(prompt) - len(ln)) for ln in lines], device=dev)
            pos, _ = mrope_positions(ids, h.image_token_id, g.repeat_interleave(2, dim=0), h.ip["merge"])
            emb = embed_with_images(model, ids, img)
            logits = model(inputs_embeds=emb, position_ids=pos, use_cache=False).logits.float()
            logp = torch.log_softmax(logits[:, len(prompt) - 1:-1], -1)
            tgt = ids[:, len(prompt):]
            lp = logp.gather(-1, tgt[..., None])[..., 0]
            keep = torch.tensor([[j < len(ln) for j in range(tgt.shape[1])] for ln in lines], device=dev)
            line_lp = (lp * keep).sum(-1).view(n_rows, 2)
            (grad,) = torch.autograd.grad((line_lp[:, 0] - line_lp[:, 1]).sum(), x)
        return (grad @ self.direction.to(dev)).view(n, steps, *grad.shape[1:3]).mean(1).detach().cpu().numpy()

    def die_scores(self, image, labels: tuple, lang: str = "en"):
        """(Dies, {pattern: smoothed per-die score}) for a canvas image and its named patterns."""
        dies = read_dies(image)
        if not labels:
            return dies, {}
        px = self.pixel_scores(image, tuple(labels), lang)
        fail = dies.grid == 2
        return dies, {p: _smooth(dies.per_die(px[i]), fail) for i, p in enumerate(labels)}

    def evidence(self, image, labels: tuple, lang: str = "en") -> tuple[list[dict], dict]:
        """Per named pattern a dict (pattern, dies (row, col) of its mask, top die, words), and the masks."""
        dies, scores = self.die_scores(image, labels, lang)
        out, masks = [], {}
        for p, sc in scores.items():
            best = sc.max() if sc.size else 0.0
            mask = (dies.grid == 2) & (sc >= REL * best) & (sc > 0) if best > 0 else np.zeros(sc.shape, bool)
            masks[p] = mask
            top = np.unravel_index(int(np.argmax(np.where(dies.grid == 2, sc, -np.inf))), sc.shape) \
                if (dies.grid == 2).any() else None
            words = describe(p, mask, dies.grid)
            out.append({"pattern": p, "n_dies": int(mask.sum()),
                        "dies": [[int(r), int(c)] for r, c in np.argwhere(mask)],
                        "top_die": None if top is None else [int(top[0]), int(top[1])],
                        "grid": list(dies.grid.shape), **words})
        return out, masks

    def __call__(self, assessment, image, lang: str = "en") -> None:
        """The head's annotator hook: fills ``assessment.evidence`` for the named patterns."""
        if getattr(assessment, "abstain", False) or not assessment.labels:
            return
        assessment.evidence = self.evidence(image, tuple(assessment.labels), lang)[0]


def annotator(head) -> Attributor:
    """The evidence annotator for a wafer head (append it to ``head.annotators``)."""
    return Attributor(head)


__all__ = ["Attributor", "annotator", "REL"]
