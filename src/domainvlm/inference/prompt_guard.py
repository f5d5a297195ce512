"""Refuse prompts longer than the model's context (or a configured cap) before they reach the engine.

A 1.4 MB prompt would hold the engine for many minutes (and gigabytes) only to be truncated or answered
badly, while every other request waits behind it. The check is cheap: no token is longer than the longest
vocabulary entry, so a text of C characters has at least C / longest tokens and gross cases are refused
without tokenising; anything else is tokenised once, through the model's own chat template.
"""

from __future__ import annotations

from ..errors import UserError
from ..models.chat_format import to_hf_messages


class PromptTooLong(UserError):
    status = 400


def context_length(model) -> int | None:
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text, "max_position_embeddings", None) or getattr(cfg, "max_position_embeddings", None)
    return int(n) if n else None


class PromptBudget:
    """``check(messages, images)`` -> prompt tokens, or :class:`PromptTooLong` naming the limit."""

    def __init__(self, processor, model, max_tokens: int | None = None):
        self.processor, self.tok = processor, processor.tokenizer
        self.context = context_length(model)
        if max_tokens and self.context and max_tokens > self.context:
            raise UserError(f"--max-prompt-tokens: {max_tokens} is over the model's context of {self.context}")
        self.limit = max_tokens or self.context
        vocab = self.tok.get_vocab()
        self.longest = max(map(len, vocab)) if vocab else 64  # characters of the longest token

    def _image_tokens(self, image) -> int:
        ip = getattr(self.processor, "image_processor", None)
        size = getattr(image, "size", None)
        if ip is None or size is None or not hasattr(ip, "get_number_of_image_patches"):
            return 1
        w, h = size
        return max(1, ip.get_number_of_image_patches(h, w, {}) // getattr(ip, "merge_size", 1) ** 2)

    def _refuse(self, what: str):
        ctx = f" (the model's context is {self.context:,} tokens)" if self.context else ""
        raise PromptTooLong(f"messages: the prompt is {what}, over this server's limit of {self.limit:,} tokens"
                            f"{ctx}; shorten the conversation")

    def check(self, messages: list[dict], images: list) -> int:
        if not self.limit:
            return 0
        chars = sum(len(m.get("content") or "") for m in messages)
        if chars > self.limit * self.longest:
            self._refuse(f"at least {chars // self.longest:,} tokens ({chars:,} characters)")
        text = self.processor.apply_chat_template(to_hf_messages(messages), tokenize=False,
                                                  add_generation_prompt=True)
        n = len(self.tok(text, add_special_tokens=False, verbose=False)["input_ids"])
        n += sum(self._image_tokens(im) - 1 for im in images)  # the template holds one placeholder each
        if n > self.limit:
            self._refuse(f"{n:,} tokens")
        return n
