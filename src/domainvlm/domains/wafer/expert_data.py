"""Training data for the wafer expert, built once and sampled on the GPU.

Every conversation the expert learns is one of a closed set of *templates* (defect set x language x question,
optionally with a follow-up turn, plus a few out-of-scope questions with a polite refusal). Each template is
encoded once through the generic record path (:func:`domainvlm.models.chat_format.encode_train`, answer-only
labels), so a training batch is just: a sampled map canvas (randomly rotated/mirrored) + a sampled template.
Maps are drawn on the fixed canvas once (:mod:`.canvas`) and kept on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from ...models.chat_format import IGNORE, encode_train
from ...models.qwen_fast import image_params, mrope_positions, patchify
from . import knowledge as wk
from .canvas import canvas_batch
from .instruct import FOLLOW_UPS, QUESTIONS, follow_up_answer
from .knowledge import REFUSAL, line_end
from .patterns import PATTERNS, canonical_set, mixedwm38_classes, set_key
from .render import _LUT, _layout

OUT_OF_SCOPE = {
    "en": ["What is the capital of France?", "Write a short poem about the sea.",
           "Translate 'good morning' into German.", "Who won the football world cup in 2018?"],
    "zh": ["法国的首都是哪里？", "写一首关于大海的短诗。", "把“早上好”翻译成德语。", "2018年世界杯冠军是谁？"],
}
LANGS = ("en", "zh")
CLASSES = mixedwm38_classes()


def class_names(tax) -> list[str]:
    """The recipe's class list for a model's taxonomy: the 38 MixedWM38 classes first (their indices unchanged,
    as the superposer and the presence head use them), then every further answer set of ``tax``."""
    extra = [set_key(s, tax) for s in tax.answer_sets()]
    return CLASSES + [c for c in dict.fromkeys(extra) if c not in CLASSES]


def conversations(classes=None, tax=None):
    """(kind, class index or -1, lang, messages) for every template, in a fixed order; ``classes`` /
    ``tax``: a model's own class list (class_names) and taxonomy (default: the 38 MixedWM38 classes)."""
    for c, name in enumerate(classes or CLASSES):
        d = canonical_set(name.split("+")) if tax is None else tax.canonical(name.split("+"))
        for lang in LANGS:
            for q in QUESTIONS[lang]:
                base = [{"role": "user", "content": f"<image>\n{q}"},
                        {"role": "assistant", "content": wk.answer(d, lang, True, tax)}]
                yield "diag", c, lang, base
                for fu in FOLLOW_UPS[lang]:
                    yield "follow", c, lang, base + [{"role": "user", "content": fu},
                                                     {"role": "assistant",
                                                      "content": follow_up_answer(d, lang, tax)}]
    for lang in LANGS:
        for q in OUT_OF_SCOPE[lang]:
            yield "oos", -1, lang, [{"role": "user", "content": f"<image>\n{q}"},
                                    {"role": "assistant", "content": REFUSAL[lang]}]


def corpus() -> list[str]:
    """Every text the expert is trained on (the tokenizer is learnt from it)."""
    texts = []
    for _, _, _, msgs in conversations():
        texts.extend(m["content"].replace("<image>", "").strip() for m in msgs)
    return list(dict.fromkeys(texts))


class Templates:
    """All conversations encoded once: right-padded ids / labels / 3-D positions, indexed by template."""

    def __init__(self, processor, image_token_id: int, size: int, device, classes=None, tax=None):
        from PIL import Image

        blank = Image.new("RGB", (size, size))
        merge = processor.image_processor.merge_size
        rows, self.kind, self.cls, self.lang = [], [], [], []
        twins = []  # (full diagnosis template, its short twin)
        n_cls = len(classes or CLASSES)
        for kind, c, lang, msgs in conversations(classes, tax):
            enc = encode_train(processor, msgs, [blank])
            pos, _ = mrope_positions(enc["input_ids"], image_token_id, enc["image_grid_thw"], merge)
            rows.append((enc["input_ids"][0], enc["labels"][0], pos[:, 0]))
            self.kind.append(kind)
            self.cls.append(c)
            self.lang.append(lang)
            if kind == "diag":  # its twin cut after the diagnosis line (same tokens as the full answer)
                ids, lab = rows[-1][0], rows[-1][1]
                e = line_end(processor.tokenizer, ids, int((lab != IGNORE).nonzero()[0]))
                twins.append((len(rows) - 1, len(rows)))
                rows.append((ids[:e], lab[:e], pos[:, 0, :e]))
                self.kind.append("short")
                self.cls.append(c)
                self.lang.append(lang)
        self.grid = enc["image_grid_thw"][0].tolist()
        n = max(len(r[0]) for r in rows)
        pad = processor.tokenizer.pad_token_id
        self.ids = torch.full((len(rows), n), pad, dtype=torch.long)
        self.labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
        self.pos = torch.zeros((len(rows), 3, n), dtype=torch.long)
        self.length = torch.zeros(len(rows), dtype=torch.long)
        for i, (a, b, p) in enumerate(rows):
            k = len(a)
            self.ids[i, :k], self.labels[i, :k], self.pos[i, :, :k] = a, b, p
            self.pos[i, :, k:] = p.max() + 1 + torch.arange(n - k)  # padding: masked by labels, after all tokens
            self.length[i] = k
        for name in ("ids", "labels", "pos", "length"):
            setattr(self, name, getattr(self, name).to(device))
        self.device = device
        # lookup tables: diag[c, lang, q], follow[c, lang, q*len(FOLLOW_UPS)], oos[lang, q]
        idx = {}
        for i, (kind, c, lang) in enumerate(zip(self.kind, self.cls, self.lang)):
            idx.setdefault((kind, c, lang), []).append(i)
        self.diag = torch.tensor([[idx[("diag", c, lg)] for lg in LANGS] for c in range(n_cls)], device=device)
        self.follow = torch.tensor([[idx[("follow", c, lg)] for lg in LANGS] for c in range(n_cls)], device=device)
        self.oos = torch.tensor([idx[("oos", -1, lg)] for lg in LANGS], device=device)
        self.short_of = torch.arange(len(rows), device=device)  # full diagnosis template -> its short twin
        full, short = zip(*twins)
        self.short_of[list(full)] = torch.tensor(short, device=device)

    def sample(self, cls: torch.Tensor, follow_frac: float, oos_frac: float, gen: torch.Generator,
               short_frac: float = 0.0) -> torch.Tensor:
        """One template index per sample of class ``cls`` (random language, question, kind); ``short_frac`` of
        the diagnosis samples end after the diagnosis line (the templated explanation costs compute and carries
        no information about the map)."""
        b, dev = len(cls), self.device
        lang = torch.randint(0, len(LANGS), (b,), device=dev, generator=gen)
        u = torch.rand(b, device=dev, generator=gen)
        d = self.diag[cls, lang]
        d = d.gather(1, torch.randint(0, d.shape[1], (b, 1), device=dev, generator=gen))[:, 0]
        f = self.follow[cls, lang]
        f = f.gather(1, torch.randint(0, f.shape[1], (b, 1), device=dev, generator=gen))[:, 0]
        o = self.oos[lang]
        o = o.gather(1, torch.randint(0, o.shape[1], (b, 1), device=dev, generator=gen))[:, 0]
        if short_frac > 0:
            d = torch.where(torch.rand(b, device=dev, generator=gen) < short_frac, self.short_of[d], d)
        return torch.where(u < oos_frac, o, torch.where(u < oos_frac + follow_frac, f, d))

    def batch(self, t: torch.Tensor) -> dict:
        n = int(self.length[t].max())
        return {"input_ids": self.ids[t, :n], "labels": self.labels[t, :n],
                "position_ids": self.pos[t, :, :n].permute(1, 0, 2).contiguous()}


class MapBank:
    """Canvases of one wafer set (one split) on the device, with class indices into CLASSES."""

    def __init__(self, ws, size: int, device, source: str, classes=None, tax=None):
        self.source, self.taxonomy, self.size = source, ws.taxonomy, size
        self.canvas = torch.from_numpy(canvas_batch(ws.maps, size)).to(device)
        # per map (rows, cols, die pixels k, top, left) on the canvas, for die-exact rotations
        geo = []
        for m in ws.maps:
            h, w = np.shape(m)
            k, _, top, left = _layout(h, w, size)
            geo.append((h, w, k, top, left))
        self.geometry = torch.tensor(geo, dtype=torch.float32, device=device)
        names = classes or CLASSES
        self.n_classes = len(names)
        self.cls = torch.tensor([names.index(set_key(d, tax)) for d in ws.defects], device=device)
        self.defects = [tuple(d) for d in ws.defects]

    def __len__(self):
        return len(self.cls)

    def class_weights(self, alpha: float) -> torch.Tensor:
        """Per-map sampling weight n_class^-alpha (0 = uniform over maps, 1 = uniform over classes)."""
        counts = torch.bincount(self.cls, minlength=self.n_classes).float()
        return counts[self.cls].pow(-alpha)


def pattern_only(maps: torch.Tensor, min_size: int = 10) -> torch.Tensor:
    """(N, H, W) maps (0 off, 1 pass, 2 fail) with fail dies in 8-connected clusters smaller than min_size passed.

    Keeps the defect pattern (blobs, rings, scratch lines) and drops most of the random background fails.
    Cluster labels spread by 3x3 max-pooling until stable (per-map ids stay exact in float32).
    """
    import torch.nn.functional as F

    n, h, w = maps.shape
    fail = maps == 2
    keepf = fail.unsqueeze(1).float()
    lab = torch.arange(1, h * w + 1, dtype=torch.float32, device=maps.device).view(1, 1, h, w) * keepf
    while True:
        new = F.max_pool2d(lab, 3, 1, 1) * keepf
        if torch.equal(new, lab):
            break
        lab = new
    key = torch.arange(n, device=maps.device).view(n, 1, 1) * (h * w + 1) + lab[:, 0].long()
    size = torch.bincount(key.flatten(), minlength=n * (h * w + 1))[key]
    return torch.where(fail & (size < min_size), torch.ones_like(maps), maps)


def pattern_canvas(maps, size: int, device) -> torch.Tensor:
    """(N, size, size) canvases of same-shape die grids ``maps`` with their pattern only (:func:`pattern_only`)."""
    grid = torch.from_numpy(np.stack(maps).astype(np.uint8)).to(device)
    return torch.from_numpy(canvas_batch(list(pattern_only(grid).cpu().numpy()), size)).to(device)


def class_rows(cls: torch.Tensor, rows: torch.Tensor | None = None, minlength: int = 0) -> tuple[torch.Tensor, ...]:
    """(``rows`` sorted by class, start per class, count per class): an index for :func:`pick_of_class`;
    ``rows`` default: all. The sort is stable, so a seed picks the same maps on every device."""
    rows = torch.arange(len(cls), device=cls.device) if rows is None else rows
    counts = torch.bincount(cls[rows], minlength=max(minlength, int(cls.max()) + 1))
    return rows[torch.argsort(cls[rows], stable=True)], torch.cumsum(counts, 0) - counts, counts


def pick_of_class(index: tuple[torch.Tensor, ...], cls: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One row of each wanted class in ``cls`` (uniform within the class) from a :func:`class_rows` index."""
    order, start, counts = index
    u = torch.rand(len(cls), device=cls.device, generator=gen)
    return order[start[cls] + (u * counts[cls]).long().clamp_max(counts[cls] - 1)]


class Superposer:
    """New MixedWM38 mixtures from real maps: the fail dies of map B laid over map A, labelled A | B.

    MixedWM38's mixed classes are superpositions of its single patterns, so drawing (A, B) with disjoint pattern
    sets whose union is one of the 38 classes gives unlimited new, plausible mixtures (notably Scratch and Loc in
    3- and 4-pattern maps, the bundled model's main errors). Targets are drawn uniformly over the mixed classes
    that have at least one decomposition in the bank; A's wafer outline and background noise are kept, and B
    contributes only its pattern (:func:`pattern_only`), else the overlay would have twice the real noise.
    """

    def __init__(self, bank: "MapBank", maps):
        dev = bank.cls.device
        if len({np.shape(m) for m in maps}) != 1:
            raise ValueError("superposition needs maps of one shape (MixedWM38: 52x52)")
        self.pattern = pattern_canvas(maps, bank.size, dev)
        masks = [sum(1 << i for i, p in enumerate(PATTERNS) if p in name.split("+")) for name in CLASSES]
        index = {m: c for c, m in enumerate(masks)}
        present = sorted(set(bank.cls.tolist()))
        triples = [(a, b, index[masks[a] | masks[b]]) for a in present for b in present
                   if masks[a] and masks[b] and not masks[a] & masks[b] and (masks[a] | masks[b]) in index]
        if not triples:
            raise ValueError("no two classes of the bank superpose into a MixedWM38 class")
        per_target: dict[int, int] = {}
        for _, _, t in triples:
            per_target[t] = per_target.get(t, 0) + 1
        self.triples = torch.tensor(triples, device=dev)
        self.weight = torch.tensor([1.0 / per_target[t] for _, _, t in triples], device=dev)
        self.rows = class_rows(bank.cls, minlength=len(CLASSES))
        self.bank = bank

    def sample(self, n: int, gen: torch.Generator, dihedral: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(canvas (n, H, W), class index (n,)) of n new mixtures."""
        tr = self.triples[torch.multinomial(self.weight, n, replacement=True, generator=gen)]
        a = self.bank.canvas[pick_of_class(self.rows, tr[:, 0], gen)]
        b = self.pattern[pick_of_class(self.rows, tr[:, 1], gen)]
        if dihedral:  # independent symmetries: B's pattern lands anywhere relative to A's
            a = dihedral_batch(a, torch.randint(0, 8, (n,), device=a.device, generator=gen))
            b = dihedral_batch(b, torch.randint(0, 8, (n,), device=a.device, generator=gen))
        return torch.where((a > 0) & (b == 2), b, a), tr[:, 2]


def dihedral_batch(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, H, W) with per-sample transform k in 0..7 (rotate 90*(k%4), then mirror if k >= 4)."""
    out = torch.empty_like(x)
    for t in range(8):
        sel = (k == t).nonzero().flatten()
        if len(sel):
            y = x[sel].rot90(t % 4, dims=(1, 2))
            out[sel] = y.flip(2) if t >= 4 else y
    return out


def rotate_batch(canvas: torch.Tensor, geometry: torch.Tensor, angle: torch.Tensor,
                 mirror: torch.Tensor) -> torch.Tensor:
    """Rotate each map of a canvas batch by ``angle`` (radians), after mirroring where ``mirror``, die by die.

    The rotation acts on the die grid, not on pixels, so every die stays one k x k block of one palette
    colour, as real renders are. It runs in coordinates normalised to [-1, 1] on both axes: a wafer fills
    its map's bounding box, so this is the physical rotation of the wafer also for non-square die grids
    (WM-811K). Each output die takes the nearest source die; dies that come from outside the map are off-wafer.
    Rotations by multiples of 90 degrees of a square map are exactly the dihedral ones.
    ``canvas`` (B, S, S) palette indices, ``geometry`` (B, 5) rows of (h, w, k, top, left) as in MapBank.
    """
    b, size, _ = canvas.shape
    h, w, k, top, left = (geometry[:, i].view(b, 1, 1) for i in range(5))
    ok = k > 0  # maps larger than the canvas were subsampled: leave them as they are
    k = k.clamp_min(1)
    ax = torch.arange(size, device=canvas.device, dtype=torch.float32)
    i = torch.floor((ax.view(1, size, 1) - top) / k)
    j = torch.floor((ax.view(1, 1, size) - left) / k)
    inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
    u = (2 * i + 1) / h - 1
    v = (2 * j + 1) / w - 1
    v = torch.where(mirror.view(b, 1, 1), -v, v)
    c, s = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
    i2 = torch.floor((c * u - s * v + 1) * h / 2 + 1e-4)
    j2 = torch.floor((s * u + c * v + 1) * w / 2 + 1e-4)
    valid = inside & (i2 >= 0) & (i2 < h) & (j2 >= 0) & (j2 < w)
    sy = (top + i2 * k + k // 2).clamp(0, size - 1).long()
    sx = (left + j2 * k + k // 2).clamp(0, size - 1).long()
    flat = canvas.reshape(b, -1).gather(1, (sy * size + sx).reshape(b, -1)).view(b, size, size)
    out = torch.where(valid, flat, torch.zeros_like(flat))
    return torch.where(ok, out, canvas)


def augment_batch(canvas: torch.Tensor, geometry: torch.Tensor, rotate_frac: float,
                  gen: torch.Generator) -> torch.Tensor:
    """Training symmetry of every map: a free rotation (+ random mirror) for ``rotate_frac`` of them, else one
    of the 8 dihedral transforms."""
    b, dev = len(canvas), canvas.device
    out = dihedral_batch(canvas, torch.randint(0, 8, (b,), device=dev, generator=gen))
    if rotate_frac <= 0:
        return out
    sel = (torch.rand(b, device=dev, generator=gen) < rotate_frac).nonzero().flatten()
    if len(sel):
        angle = torch.rand(len(sel), device=dev, generator=gen) * (2 * np.pi)
        mirror = torch.rand(len(sel), device=dev, generator=gen) < 0.5
        out[sel] = rotate_batch(canvas[sel], geometry[sel], angle, mirror)
    return out


class PixelMaker:
    """Palette-index canvases -> pixel_values, exactly as the model's image processor would make them."""

    def __init__(self, processor, device):
        self.ip = image_params(processor)
        self.lut = torch.from_numpy(_LUT).to(device)

    def __call__(self, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, w = canvas.shape
        pv = patchify(self.lut[canvas.long()], **self.ip)
        p = self.ip["patch"]
        grid = torch.tensor([[1, h // p, w // p]], device=canvas.device).expand(b, 3)
        return pv, grid


def numpy_canvas_check(ws, size: int, n: int = 64) -> bool:
    """The vectorised canvas equals render_map for the first n maps (run at start-up as a guard)."""
    from .render import render_map

    idx = list(range(min(n, len(ws))))
    cb = canvas_batch([ws.maps[i] for i in idx], size)
    return all(np.array_equal(_LUT[cb[j]], np.asarray(render_map(ws.maps[i], size=size))) for j, i in enumerate(idx))
