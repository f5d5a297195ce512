"""Evidence: which dies make the wafer expert name each pattern, read from the model itself.

For each named pattern P the target is how much more the model would write P's diagnosis line than "Normal"
on this map: ``log p("Diagnosis: P") - log p("Diagnosis: Normal")``, teacher-forced after the standard question.
The log-softmax normalisation of the first name token is shared by both lines and cancels, so the target is
P's own evidence, not its competition with the other patterns of a mixture (the contrast "line with P minus the
line without it" was tried first and pointed far worse on mixtures).

Attribution (the default, evidence_tokens.py): over the vision tower's tokens after block ``LEVEL`` of 6, a
single integrated-gradient step at the midpoint of the straight path from the same map with every failing die
passing (the baseline, its tokens kept per wafer outline) to the map; each token's score is shared out over the
failing dies of its patch, so a die's score is zero unless it fails. The map's tokens are the answer's own
where the head kept them (kept_tokens.py) and the LM part is one lean forward (evidence_lm.py); ``fast=False``
is the reference path (its own vision forward, the HF LM twice), the same scores to float rounding. Chosen on
synthetic seeds 1 and 2 (the cheapest split that pointed at >= 0.9 of the named patterns there;
docs/wafer_evidence.md), then reported on seed 3. ``level=None`` is the older pixel path: the same target's
integrated gradients with respect to the canvas pixels along the pass -> fail colour, summed per die (the whole
tower in the backward; ``STEPS`` points share one batched forward). The pattern's die mask is the 8-connected
cluster of failing dies with the largest attribution sum, its top die the one whose failing 3 x 3 neighbourhood
scores best (:func:`select`; chosen on synthetic seed 1 over the per-die maximum and smoothed maxima,
bench/wafer_evidence.py).
:func:`.evidence_words.describe` says where it lies.
"""

from __future__ import annotations

import numpy as np
import torch

from ...models.qwen_fast import FastVision, patchify
from .dies import read_dies
from .evidence_lm import supported, tree_targets
from .evidence_tokens import line_targets, per_target_grad, to_dies, token_scores, token_values
from .evidence_words import describe
from .instruct import QUESTIONS
from .kept_tokens import KeptTokens
from .render import PALETTE
from .trie import line_tokens

# Path points (integrated-gradient steps) and where the tower is split; chosen on synthetic seeds 1-2 for
# pointing and cost (bench/wafer_evidence.py --level / --steps / --at; docs/wafer_evidence.md).
STEPS = 1
LEVEL = 6  # None: pixels (the whole tower); k: the vision tokens after block k (evidence_tokens.py)
SINGLE = 0.5  # the path point of a single step: the midpoint (1.0 = the plain gradient at the map)


def _smooth(score: np.ndarray, fail: np.ndarray) -> np.ndarray:
    """Mean of the score over the failing dies of each die's 3 x 3 neighbourhood (failing dies only)."""
    s = np.where(fail, score, 0.0)
    pad_s, pad_f = np.pad(s, 1), np.pad(fail.astype(float), 1)
    h, w = s.shape
    tot = sum(pad_s[i:i + h, j:j + w] for i in range(3) for j in range(3))
    cnt = sum(pad_f[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return np.where(fail, tot / np.maximum(cnt, 1), 0.0)


def clusters(fail: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels (1..n, 0 = not failing) of the 8-connected clusters of failing dies, and n; numbered in row-major
    order of each cluster's first die. Vectorised: every failing die takes the smallest die index among its
    3 x 3 failing neighbourhood, then follows that die's own label (pointer jumping), until nothing changes."""
    h, w = fail.shape
    none = h * w
    lab = np.where(fail, np.arange(none).reshape(h, w), none)
    while True:
        pad = np.pad(lab, 1, constant_values=none)
        low = np.minimum.reduce([pad[i:i + h, j:j + w] for i in range(3) for j in range(3)])
        low = np.where(fail, low, none)
        ext = np.append(low.ravel(), none)
        low = ext[ext[low]]  # two jumps: a label is a die of the same cluster
        if np.array_equal(low, lab):
            break
        lab = low
    out = np.zeros((h, w), np.int32)
    roots, idx = np.unique(lab[fail], return_inverse=True)
    out[fail] = idx.ravel() + 1
    return out, len(roots)


def select(raw: np.ndarray, grid: np.ndarray, lab=None, point=None) -> tuple[np.ndarray, tuple | None, np.ndarray]:
    """(mask, top die, smoothed score) of one pattern from its per-die attribution: the cluster of failing dies
    with the largest attribution sum (a pattern is a cluster; the sum, not the mean, so an isolated noise die
    with a sharp gradient does not win), and in it the die whose 3 x 3 failing neighbourhood scores best (in
    ``point`` where given: the token path's whole token score per die, evidence_tokens.token_values)."""
    fail = grid == 2
    sm = _smooth(raw if point is None else point, fail)
    lab, n = lab if lab is not None else clusters(fail)
    if n == 0:
        return np.zeros(grid.shape, bool), None, sm
    sums = np.bincount(lab.ravel(), weights=np.where(fail, raw, 0.0).ravel(), minlength=n + 1)
    sums[0] = -np.inf
    mask = lab == int(np.argmax(sums))
    top = np.unravel_index(int(np.argmax(np.where(mask, sm, -np.inf))), sm.shape)
    return mask, (int(top[0]), int(top[1])), sm


class Attributor:
    """Per-die attribution of each named pattern for one wafer head (``head``: a :class:`.head.WaferHead`).

    ``steps``: points on the straight path from the all-pass map to the map whose gradients are averaged
    (integrated gradients; one step sits at ``single``: 1.0 = the plain gradient at the map). ``level``: the
    vision block after which tokens are attributed (evidence_tokens.py), None = the canvas pixels."""

    def __init__(self, head, steps: int = STEPS, level: int | None = LEVEL, single: float = SINGLE,
                 fast: bool = True):
        self.head, self.steps = head, max(1, int(steps))
        # points on the path (baseline 0 -> map 1): midpoints of equal steps; one step is at ``single``
        self.alphas = [(j + 0.5) / self.steps for j in range(self.steps)] if self.steps > 1 else [float(single)]
        self.vision = FastVision(head.model)  # its own captured tables: the head's may be inference tensors
        self.direction = torch.tensor(np.subtract(PALETTE[2], PALETTE[1]), dtype=torch.float32)
        depth = len(self.vision.visual.blocks)
        self.level = None if level is None else min(max(int(level), 0), depth)
        self.baselines: dict = {}  # tokens of all-pass maps, by their bytes (one per wafer outline seen)
        # fast: the answer's own vision tokens (kept_tokens.py) and the lean LM target (evidence_lm.py); off,
        # the reference path (its own vision forward, the HF LM twice), the same scores to float rounding
        self.reuse, self.lean = fast, fast and supported(head.model)
        if fast and getattr(head, "kept", False) is None:
            head.kept = KeptTokens()

    def _seqs(self, labels: tuple, lang: str) -> tuple[list[int], list[list[int]]]:
        """The standard question's prompt, and each pattern's line followed by the Normal line."""
        h = self.head
        prompt = h.prompt_ids([{"role": "user", "content": f"<image>\n{QUESTIONS[lang][0]}"}])
        lines = [line_tokens(h.tok, (p,), lang, h.tax) for p in labels]
        return prompt, lines + [line_tokens(h.tok, (), lang, h.tax)]

    def targets(self, labels: tuple, lang: str) -> tuple[list[int], list[list[int]], torch.Tensor]:
        """(prompt, lines, weights (n, lines)): pattern i's target is weights[i] @ log p(line), its line over
        the Normal line (the last)."""
        prompt, lines = self._seqs(tuple(labels), lang)
        w = torch.zeros(len(labels), len(lines))
        w[range(len(labels)), range(len(labels))] = 1.0
        w[:, -1] = -1.0
        return prompt, lines, w

    def pixel_scores(self, image, labels: tuple, lang: str = "en") -> np.ndarray:
        """(len(labels), H, W): d target / d pixel along the pass -> fail colour, one row per pattern."""
        with torch.inference_mode(False), torch.enable_grad():  # the engine answers under inference_mode
            return self._pixel_scores(image, tuple(labels), lang)

    def _pixel_scores(self, image, labels, lang):
        h, model = self.head, self.head.model
        dev, dtype = model.device, next(model.parameters()).dtype
        steps = self.steps
        rgb = torch.from_numpy(h.rgb_array([image])).to(dev, torch.float32)
        fail_px = (rgb == torch.tensor(PALETTE[2], device=dev, dtype=torch.float32)).all(-1, keepdim=True)
        base = torch.where(fail_px, torch.tensor(PALETTE[1], device=dev, dtype=torch.float32), rgb)
        alphas = torch.tensor(self.alphas, device=dev)
        x = (base + alphas.view(-1, 1, 1, 1) * (rgb - base)).requires_grad_(True)  # (steps, H, W, 3)
        s = h.size // h.ip["patch"]
        img = self.vision(patchify(x, **h.patch_ip).to(dtype), (1, s, s))  # vision once per step
        lm_target = tree_targets if self.lean else line_targets
        target = lm_target(h, *self.targets(labels, lang), img, steps)  # (n,), summed over steps
        grad = per_target_grad(target, x)
        return (grad @ self.direction.to(dev)).mean(1).detach().cpu().numpy()

    def raw_scores(self, image, labels: tuple, lang: str = "en"):
        """(Dies, {pattern: per-die attribution}) for a canvas image and its named patterns."""
        dies = read_dies(image)
        if not labels:
            return dies, {}
        if self.level is not None:
            with torch.inference_mode(False), torch.enable_grad():
                sc, fail = token_scores(self, image, tuple(labels), lang)
            per = to_dies(sc, fail, dies, self.head.ip["patch"], self.head.ip["merge"])
            return dies, {p: per[i] for i, p in enumerate(labels)}
        px = self.pixel_scores(image, tuple(labels), lang)
        return dies, {p: dies.per_die(px[i]) for i, p in enumerate(labels)}

    def evidence(self, image, labels: tuple, lang: str = "en") -> tuple[list[dict], dict]:
        """Per named pattern a dict (pattern, dies (row, col) of its mask, top die, grid and frame they are
        in: dies.read_dies, words), and the masks (on the grid cropped to the wafer)."""
        dies, raw = self.raw_scores(image, labels, lang)
        lab = clusters(dies.grid == 2)
        out, masks = [], {}
        for p, r in raw.items():
            mask, top, _ = select(r, dies.grid, lab, self.point(r, dies))
            masks[p] = mask
            out.append({"pattern": p, "n_dies": int(mask.sum()),  # (row, col) in the map's frame, not the crop
                        "dies": [dies.framed(rc) for rc in np.argwhere(mask)],
                        "top_die": None if top is None else dies.framed(top),
                        "grid": list(dies.frame_shape or dies.grid.shape), "frame": dies.frame,
                        **describe(p, mask, dies.grid, _zh_of(self.head, p))})
        return out, masks

    def point(self, raw: np.ndarray, dies) -> np.ndarray | None:
        """The per-die score the top die is picked by (None: ``raw`` itself, the pixel path)."""
        if self.level is None:
            return None
        return token_values(raw, dies.grid, dies, self.head.ip["patch"], self.head.size)

    def __call__(self, assessment, image, lang: str = "en") -> None:
        """The head's annotator hook: fills ``assessment.evidence`` for the named patterns."""
        if getattr(assessment, "abstain", False) or not assessment.labels:
            return
        assessment.evidence = self.evidence(image, tuple(assessment.labels), lang)[0]


def attributor(head) -> Attributor:
    """The head's attributor, built once and kept on the head."""
    if getattr(head, "_attributor", None) is None:
        head._attributor = Attributor(head)
    return head._attributor


def annotator(head) -> Attributor:
    """The evidence annotator for a wafer head (append it to ``head.annotators``)."""
    return attributor(head)


def _zh_of(head, pattern: str) -> str | None:
    """The Chinese name of a class in the head's taxonomy (a fab's own classes have theirs there)."""
    tax = getattr(head, "tax", None)
    try:
        return (tax.get(pattern).zh or None) if tax is not None else None
    except KeyError:
        return None
