"""Turn record conversations into model inputs through the model's own chat template and processor.

Works for any HF image-text-to-text processor (Qwen2-VL family, LLaVA, ...): the template decides the
prompt format, the processor expands image placeholders. Loss is on assistant tokens only: each assistant
turn's span is found by encoding the conversation up to that turn with and without the answer.
"""

from __future__ import annotations

import torch

from ..data.record import IMAGE_TOKEN

SEQ_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
IGNORE = -100


def to_hf_messages(messages: list[dict]) -> list[dict]:
    """'<image>' placeholders -> content lists [{'type': 'image'}, {'type': 'text', ...}]."""
    out = []
    for m in messages:
        parts = []
        for k, chunk in enumerate(m["content"].split(IMAGE_TOKEN)):
            if k:
                parts.append({"type": "image"})
            chunk = chunk.strip("\n") if k or m["content"].startswith(IMAGE_TOKEN) else chunk
            if chunk:
                parts.append({"type": "text", "text": chunk})
        out.append({"role": m["role"], "content": parts})
    return out


def _n_images(messages) -> int:
    return sum(m["content"].count(IMAGE_TOKEN) for m in messages)


def _encode(processor, messages, images, add_generation_prompt: bool) -> dict:
    text = processor.apply_chat_template(to_hf_messages(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    kw = {"images": images} if images else {}
    enc = processor(text=[text], return_tensors="pt", **kw)
    return dict(enc)


def encode_prompt(processor, messages: list[dict], images: list) -> dict:
    """Inputs for generation: the conversation so far plus the assistant prompt."""
    return _encode(processor, messages, images, add_generation_prompt=True)


class CutsImage(ValueError):
    """max_length ends inside an image's tokens (a cut image breaks the vision forward); carries the numbers."""

    def __init__(self, needed: int, length: int, max_length: int):
        self.needed, self.length, self.max_length = needed, length, max_length
        super().__init__(f"sequence of {length} tokens cuts through an image at max_length={max_length} "
                         f"(its image tokens end at token {needed})")


def encode_train(processor, messages: list[dict], images: list, max_length: int | None = None) -> dict:
    """Full conversation with ``labels`` = token ids on assistant turns, IGNORE elsewhere."""
    enc = _encode(processor, messages, images, add_generation_prompt=False)
    ids = enc["input_ids"][0]
    labels = torch.full_like(ids, IGNORE)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        k = _n_images(messages[:i])
        start = _encode(processor, messages[:i], images[:k], True)["input_ids"].shape[1]
        end = _encode(processor, messages[: i + 1], images[:k], False)["input_ids"].shape[1]
        # the template may add a newline after the end-of-turn token: keep the end-of-turn, drop the rest
        eos = getattr(processor.tokenizer, "eos_token_id", None)
        stop = end
        for j in range(start, end):
            if ids[j].item() == eos:
                stop = j + 1
                break
        labels[start:stop] = ids[start:stop]
    enc["labels"] = labels[None]
    if max_length and ids.shape[0] > max_length:
        image_id = getattr(processor, "image_token_id", None)
        if image_id is not None and (ids[max_length:] == image_id).any():
            raise CutsImage(int((ids == image_id).nonzero().max()) + 1, ids.shape[0], max_length)
        for k in SEQ_KEYS:
            if k in enc:
                enc[k] = enc[k][:, :max_length]
    return enc


def collate(examples: list[dict], pad_id: int) -> dict:
    """Left-pad sequence keys (generation-friendly), concatenate vision tensors along dim 0."""
    n = max(e["input_ids"].shape[1] for e in examples)
    batch = {}
    for k in SEQ_KEYS:
        if k not in examples[0]:
            continue
        fill = {"input_ids": pad_id, "labels": IGNORE}.get(k, 0)
        rows = []
        for e in examples:
            x = e[k][0]
            rows.append(torch.cat([torch.full((n - x.shape[0],), fill, dtype=x.dtype), x]))
        batch[k] = torch.stack(rows)
    for k in dict.fromkeys(k for e in examples for k in e):
        if k in SEQ_KEYS:
            continue
        parts = [e[k] for e in examples if k in e and e[k] is not None]
        if parts and isinstance(parts[0], torch.Tensor):
            batch[k] = torch.cat(parts, dim=0)
    return batch
