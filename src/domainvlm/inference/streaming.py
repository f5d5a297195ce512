"""Token streaming for a whole batch: each row's text is reported as it grows.

transformers' own streamers only handle batch size 1, which would force streamed requests to run one at a
time (under load they then starve behind the batches). ``RowStreamer`` receives every decoding step of a
batched ``generate`` and calls ``emit(row, new_text)``; ``RowCancel`` ends a single row whose client left.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class RowStreamer(BaseStreamer):
    def __init__(self, tokenizer, rows: int, emit: Callable[[int, str], None]):
        self.tok, self.emit = tokenizer, emit
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [0] * rows  # characters of each row's text already emitted
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for i, t in enumerate(value.reshape(len(self.ids), -1).tolist()):
            self.ids[i].extend(t)
            self._flush(i, final=False)

    def end(self) -> None:
        for i in range(len(self.ids)):
            self._flush(i, final=True)

    def _flush(self, i: int, final: bool) -> None:
        # Decoding the row so far (special tokens, pad and end-of-turn, vanish) keeps the pieces identical to
        # the final answer; a trailing U+FFFD is half a multi-byte character, so it waits for its other half.
        text = self.tok.decode(self.ids[i], skip_special_tokens=True)
        if not final:
            text = text.rstrip("\ufffd")
        if len(text) > self.sent[i]:
            self.emit(i, text[self.sent[i]:])
            self.sent[i] = len(text)


class RowCancel(StoppingCriteria):
    """Finish the rows for which ``cancelled(row)`` is true (their clients went away)."""

    def __init__(self, cancelled: Callable[[int], bool]):
        self.cancelled = cancelled

    def __call__(self, input_ids, scores, **kw):
        flags = [bool(self.cancelled(i)) for i in range(input_ids.shape[0])]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
