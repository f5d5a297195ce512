"""The one inference engine behind ask, eval, predict, chat, the HTTP API and the web UI.

It wraps any model the common loader reads. The generation contract is two calls:

* :meth:`Engine.generate` answers a batch of conversations (greedy or sampled); with ``emit`` it also reports
  each row's text as it grows (the server's batched streams) and ``cancelled`` ends a row early;
* :meth:`Engine.stream` yields one conversation's text as it is generated (chat, web UI).

A model whose config names an answer head (:mod:`.answer_heads`) plugs in through one hook: the engine calls
``head.answer(convs, sampling)`` under its lock and decodes freely every conversation the head leaves to it
(``None``). A head's answers are emitted whole (one piece each).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import StoppingCriteria

from ..data.images import load_image
from ..errors import UserError
from ..models.chat_format import collate, encode_prompt
from ..models.loader import load_model


class SamplingError(UserError):
    """Sampling settings that would make the logits inf/NaN (a 400 on the server, not a crashed batch)."""

    status = 400


# Logits are divided by the temperature: below this float32 logits overflow to inf and sampling fails
# ("probability tensor contains inf/nan"); lower temperatures decode greedily, which is their limit anyway.
MIN_TEMPERATURE = 1e-3


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0     # 0 -> greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    def check(self) -> "Sampling":
        for name in ("temperature", "top_p", "repetition_penalty"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SamplingError(f"{name}: must be a finite number, got {v!r}")
        return self

    def generate_kwargs(self) -> dict:
        self.check()
        kw = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature and self.temperature >= MIN_TEMPERATURE:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None,
                      remove_invalid_values=True)  # an extreme repetition_penalty gives inf logits: made finite
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


class Engine:
    """Thread-safe (one generate at a time per engine; the servers queue requests through it)."""

    def __init__(self, model_dir=None, device=None, dtype=None, quantization=None, model=None, processor=None,
                 trust_remote_code: bool = False, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        if model is None:
            model, processor = load_model(model_dir, device=device, dtype=dtype, quantization=quantization,
                                          trust_remote_code=trust_remote_code)
        self.model, self.processor = model, processor
        self.model_dir = str(model_dir) if model_dir else getattr(model, "name_or_path", "model")
        self.lock = threading.Lock()
        self.time_limit: float | None = None  # seconds of decoding per generate call (the server sets it)
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        from . import answer_heads

        self._head_factory = answer_heads.for_model(self.model)  # None -> free decoding
        self._head, self._head_model = None, None
        dv = getattr(self.model.config, "domainvlm", None) or {}
        # a fixed square input side (compact models): indexed items such as raw maps are drawn at it directly
        self.canvas_size = int(dv["image_size"]) if isinstance(dv, dict) and dv.get("image_size") else None

    @property
    def has_head(self) -> bool:
        return self._head_factory is not None

    @property
    def answer_head(self):
        """The model's :class:`~.answer_heads.AnswerHead` (built on first use, rebuilt if the model was swapped)."""
        if self._head_factory is None:
            return None
        if self._head is None or self._head_model is not self.model:
            self._head = self._head_factory(self.model, self.processor, self.model_dir)
            self._head_model = self.model
        return self._head

    @answer_head.setter
    def answer_head(self, head) -> None:
        """Plug a head in directly (an :class:`~.answer_heads.AnswerHead`, or None for free decoding)."""
        self._head, self._head_model = head, self.model
        self._head_factory = None if head is None else (lambda *a: head)

    def generate_kwargs(self, sampling: Sampling) -> dict:
        kw = sampling.generate_kwargs()
        if self.time_limit:
            kw["max_time"] = self.time_limit  # transformers stops decoding there (MaxTimeCriteria)
        return kw

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _inputs(self, convs: list[tuple[list[dict], list]]) -> dict:
        encs = []
        for messages, images in convs:
            imgs = [load_image(i) if isinstance(i, str) else i for i in images]
            encs.append(encode_prompt(self.processor, messages, imgs))
        batch = collate(encs, self.pad_id)
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if k == "pixel_values" and v.is_floating_point() else v.to(self.device))
                for k, v in batch.items()}

    @torch.inference_mode()
    def generate(self, convs: list[tuple[list[dict], list]], sampling: Sampling | None = None,
                 emit=None, cancelled=None) -> list[str]:
        """convs: [(messages, images)] with '<image>' placeholders; returns one answer per conversation.

        ``emit(row, piece)``, if given, is called as each row's text grows; ``cancelled(row)`` true ends that
        row early. With an answer head, each row's answer is emitted whole once the batch is done."""
        sampling = sampling or Sampling()
        with self.lock:
            head = self.answer_head
            if head is None:
                return self._decode(convs, sampling, emit, cancelled)
            answers = list(head.answer(convs, sampling))
            free = [k for k, a in enumerate(answers) if a is None]
            if free:
                for k, a in zip(free, self._decode([convs[k] for k in free], sampling)):
                    answers[k] = a
        if emit is not None:
            for i, a in enumerate(answers):
                emit(i, a)
        return answers

    def _decode(self, convs, sampling: Sampling, emit=None, cancelled=None) -> list[str]:
        """Free decoding of a batch (the lock is held), streamed per row when ``emit`` is given."""
        from transformers import StoppingCriteriaList

        from .streaming import RowCancel, RowStreamer

        inputs = self._inputs(convs)
        kw = {}
        if emit is not None:
            kw["streamer"] = RowStreamer(self.processor.tokenizer, len(convs), emit)
            kw["stopping_criteria"] = StoppingCriteriaList([RowCancel(cancelled)]) if cancelled else None
        out = self.model.generate(**inputs, **self.generate_kwargs(sampling), **kw, pad_token_id=self.pad_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def stream(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> Iterator[str]:
        """Yield text pieces as they are generated (one conversation).

        A generation error is re-raised to the consumer (never a silent hang), and closing the iterator early
        (client gone, Ctrl-C) stops generation at the next token so the engine is free for the next request.
        """
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        sampling = sampling or Sampling()
        if self.has_head:  # heads answer whole conversations: one piece, same text as generate()
            yield self.generate([(messages, images)], sampling)[0]
            return
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel, errors = threading.Event(), []
        self.lock.acquire()
        try:
            inputs = self._inputs([(messages, images)])
        except BaseException:
            self.lock.release()
            raise

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, **self.generate_kwargs(sampling), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                                        pad_token_id=self.pad_id)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                errors.append(e)
                streamer.end()  # unblock the consumer
            finally:
                self.lock.release()

        threading.Thread(target=work, daemon=True).start()
        try:
            yield from streamer
        finally:
            cancel.set()
        if errors:
            raise errors[0]


class _Cancelled(StoppingCriteria):
    """Stopping criterion that ends generation once the stream's consumer has gone away."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kw):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
