"""Training data of the classify recipe, built once and sampled on the device.

Images are decoded once into a (N, H, W, 3) uint8 tensor (all at the model's input size, so the training
pixels are exactly what the image processor makes of the same file). Every conversation is one of a closed
set of templates (class set x language x question), each encoded once through the generic record path
(models.chat_format.encode_train: answer-only labels). A batch is sampled images + a template per image.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import UserError
from ...models.chat_format import IGNORE, encode_train
from .instruct import QUESTIONS, answer

LANGS = ("en", "zh")


class ImageBank:
    """Images of one split and their class-set index (into ``taxonomy.answer_sets()``), on ``device``."""

    def __init__(self, records, sets, size: int, device):
        from ...data.images import load_image

        index = {s: i for i, s in enumerate(sets)}
        arr = np.empty((len(records), size, size, 3), np.uint8)
        for i, r in enumerate(records):
            im = load_image(r.images[0])
            if im.size != (size, size):
                raise UserError(f"{r.images[0]}: {im.size[0]}x{im.size[1]} image, the recipe's model input is "
                                f"{size}x{size} (set compact.image_size to the images' size)")
            arr[i] = np.asarray(im)  # load_image gives RGB
        self.images = torch.from_numpy(arr).to(device)
        self.cls = torch.tensor([index[tuple(r.labels["labels"])] for r in records], device=device)
        self.records = records

    def __len__(self):
        return len(self.cls)


class Templates:
    """All conversations encoded once: right-padded ids / labels / 3-D positions, and per template the
    position whose logits pick the class (the first token where the answer lines differ) when that token
    alone tells the classes apart (``kd_pos`` -1 otherwise)."""

    def __init__(self, processor, model_config, tax, size: int, device):
        from PIL import Image

        from ...models.qwen_fast import mrope_positions

        blank = Image.new("RGB", (size, size))
        merge = processor.image_processor.merge_size
        self.sets = tax.answer_sets()
        tok = processor.tokenizer
        self.decision = {}  # lang -> (index in the answer, candidate token per class set)
        for lang in LANGS:
            lines = [tok(answer(s, tax, lang), add_special_tokens=False)["input_ids"] for s in self.sets]
            d = next((j for j in range(min(map(len, lines))) if len({ln[j] for ln in lines}) > 1), None)
            if d is not None and len({ln[d] for ln in lines}) == len(lines):
                self.decision[lang] = (d, torch.tensor([ln[d] for ln in lines], device=device))
        rows, self.cls, self.lang, kd = [], [], [], []
        for c, s in enumerate(self.sets):
            for li, lang in enumerate(LANGS):
                for q in QUESTIONS[lang]:
                    msgs = [{"role": "user", "content": f"<image>\n{q}"},
                            {"role": "assistant", "content": answer(s, tax, lang)}]
                    enc = encode_train(processor, msgs, [blank])
                    pos, _ = mrope_positions(enc["input_ids"], model_config.image_token_id, enc["image_grid_thw"],
                                             merge)
                    rows.append((enc["input_ids"][0], enc["labels"][0], pos[:, 0]))
                    start = int((enc["labels"][0] != IGNORE).nonzero()[0])
                    kd.append(start + self.decision[lang][0] - 1 if lang in self.decision else -1)
                    self.cls.append(c)
                    self.lang.append(li)
        self.grid = enc["image_grid_thw"][0].tolist()
        n = max(len(r[0]) for r in rows)
        pad = tok.pad_token_id
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
        self.kd_pos = torch.tensor(kd, device=device)
        self.lang_of = torch.tensor(self.lang, device=device)
        per = len(QUESTIONS["en"])
        self.table = torch.arange(len(rows), device=device).view(len(self.sets), len(LANGS), per)
        self.device = device

    def sample(self, cls: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = len(cls)
        lang = torch.randint(0, len(LANGS), (b,), device=self.device, generator=gen)
        q = torch.randint(0, self.table.shape[2], (b,), device=self.device, generator=gen)
        return self.table[cls, lang, q]

    def batch(self, t: torch.Tensor) -> dict:
        n = int(self.length[t].max())
        return {"input_ids": self.ids[t, :n], "labels": self.labels[t, :n],
                "position_ids": self.pos[t, :, :n].permute(1, 0, 2).contiguous()}

    def decision_logits(self, logits: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, class-set logits) at each template's decision position, for rows whose language has one."""
        pos = self.kd_pos[t]
        rows = (pos >= 0).nonzero().flatten()
        out = torch.empty(len(rows), len(self.sets), device=logits.device, dtype=logits.dtype)
        for li, lang in enumerate(LANGS):
            if lang not in self.decision:
                continue
            sel = (self.lang_of[t[rows]] == li).nonzero().flatten()
            r = rows[sel]
            out[sel] = logits[r, pos[r]][:, self.decision[lang][1]]
        return rows, out
