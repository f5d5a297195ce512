"""The one inference engine behind ask, eval, predict, chat, the HTTP API and the web UI.

It wraps any model the common loader reads. The generation contract is two calls:

* :meth:`Engine.generate` answers a batch of conversations (greedy or sampled); with ``emit`` it also reports
  each row's text as it grows (the server's batched streams) and ``cancelled`` ends a row early;
* :meth:`Engine.stream` yields one conversation's text as it is generated (chat, web UI).

A model whose config names an answer head (:mod:`.answer_heads`) plugs in through one hook: the engine calls
``head.answer(convs, sampling)`` under its lock and decodes freely every conversation the head leaves to it
(``None``). A head's answers are cut at ``max_new_tokens`` tokens like decoded ones (``finish_reason``
'length'; not its structured JSON, see :func:`.generation.head_answers`) and emitted whole (one piece each).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

from ..data.images import as_pil
from ..errors import UserError
from ..models.chat_format import collate, encode_prompt
from ..models.loader import load_model
from . import structured as _structured
from .attention import answering_attention
from .generation import Answer, StopFilter, StripFilter, answers, extra_kwargs, head_answers, score_answers


class SamplingError(UserError):
    """Sampling settings that would make the logits inf/NaN (a 400 on the server, not a crashed batch)."""

    status = 400


# Logits are divided by the temperature: below this float32 logits overflow to inf and sampling fails
# ("probability tensor contains inf/nan"); lower temperatures decode greedily, which is their limit anyway.
MIN_TEMPERATURE = 1e-3


@dataclass
class Sampling:
    """Decoding settings. ``None`` means "what the model folder's generation_config.json says" (transformers'
    defaults where it says nothing: greedy, no repetition penalty); a value given here overrides it.
    ``temperature`` 0 forces greedy decoding, whatever the folder says."""

    max_new_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None       # 0 = off
    repetition_penalty: float | None = None
    seed: int | None = None        # torch's generator is seeded with it just before generating
    stop: tuple = ()               # stop strings: generation ends at one; the answer excludes it
    logprobs: int | None = None    # None: off; N: each token's log-prob and the top N alternatives
    json_schema: str | None = None  # JSON text of a schema (json_constraint's subset): constrained decoding
    annotate: bool = False  # an answer head's full structured answer: confidence, evidence, facts (opt-in: slow)
    cut_head_answers: bool = False  # a head's answer cut at max_new_tokens too (API, CLI); eval keeps it whole

    def check(self) -> "Sampling":
        for name in ("temperature", "top_p", "repetition_penalty"):
            v = getattr(self, name)
            if v is None:  # the model's generation_config decides
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SamplingError(f"{name}: must be a finite number, got {v!r}")
        return self

    def generate_kwargs(self) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens}
        if self.repetition_penalty is not None:
            kw["repetition_penalty"] = self.repetition_penalty
        if self.temperature is not None and self.temperature < MIN_TEMPERATURE:  # 0 (and tiny ones): greedy
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            return kw
        if self.temperature is not None:
            kw.update(do_sample=True, temperature=self.temperature)
        if self.top_p is not None:
            kw["top_p"] = self.top_p
        if self.top_k is not None:
            kw["top_k"] = self.top_k
        return kw

    @property
    def free_decoding(self) -> bool:
        """Needs the model's own token-by-token decoding (an answer head cannot honour it). Not log-probs: a
        head's answer is scored token by token afterwards (generation.score_answers)."""
        return self.json_schema is not None


class Engine:
    """Thread-safe (one generate at a time per engine; the servers queue requests through it)."""

    def __init__(self, model_dir=None, device=None, dtype=None, quantization=None, model=None, processor=None,
                 trust_remote_code: bool = False, threads: int | None = None, min_pixels: int | None = None,
                 max_pixels: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        if model is None:
            model, processor = load_model(model_dir, device=device, dtype=dtype, quantization=quantization,
                                          trust_remote_code=trust_remote_code, min_pixels=min_pixels,
                                          max_pixels=max_pixels)
        self.model, self.processor = model, processor
        self.model_dir = str(model_dir) if model_dir else getattr(model, "name_or_path", "model")
        self.lock = threading.Lock()
        self.time_limit: float | None = None  # seconds of decoding per generate call (the server sets it)
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.eos_ids = sorted({int(t) for t in [*gen_eos, tok.eos_token_id] if t is not None})
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

    def effective_sampling(self, s: Sampling) -> Sampling:
        """``s`` with its unset fields filled in from the model's generation_config (what generate() will
        use): for front-ends that show the values, like the web UI's sliders."""
        from dataclasses import replace

        g = getattr(self.model, "generation_config", None)
        sample = bool(getattr(g, "do_sample", False))
        temp = s.temperature if s.temperature is not None else (float(g.temperature or 1.0) if sample else 0.0)
        return replace(s, temperature=temp,
                       top_p=s.top_p if s.top_p is not None else float(getattr(g, "top_p", None) or 1.0),
                       top_k=s.top_k if s.top_k is not None else int(getattr(g, "top_k", None) or 0),
                       repetition_penalty=s.repetition_penalty if s.repetition_penalty is not None
                       else float(getattr(g, "repetition_penalty", None) or 1.0))

    def generate_kwargs(self, sampling: Sampling) -> dict:
        kw = sampling.check().generate_kwargs()
        if kw.get("do_sample") is not False:  # sampling may happen (asked, or by the generation_config)
            kw["remove_invalid_values"] = True  # an extreme repetition_penalty gives inf logits: made finite
        if self.time_limit:
            kw["max_time"] = self.time_limit  # transformers stops decoding there (MaxTimeCriteria)
        return kw

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _inputs(self, convs: list[tuple[list[dict], list]]) -> dict:
        encs = []
        for messages, images in convs:
            imgs = [as_pil(i) for i in images]
            encs.append(encode_prompt(self.processor, messages, imgs))
        batch = collate(encs, self.pad_id)
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if k == "pixel_values" and v.is_floating_point() else v.to(self.device))
                for k, v in batch.items()}

    def prompt_tokens(self, messages: list[dict], images: list) -> int:
        """Prompt length in tokens as the model's processor encodes it (images expanded)."""
        with torch.inference_mode():
            return int(self._inputs([(messages, images)])["input_ids"].shape[1])

    def count_usage(self, answer, messages: list[dict], images: list,
                    prompt_tokens: int | None = None) -> tuple[int, int]:
        """(prompt tokens, completion tokens) of an answer to (messages, images). Counted from the generated
        ids where the engine decoded, from the answer's text where an answer head wrote it (generation.
        head_answers); for a head's answer (which prepares its own inputs), the ``prompt_tokens`` the caller
        already counted (the server's prompt budget) or the prompt as encoded here."""
        p = getattr(answer, "prompt_tokens", None) or prompt_tokens
        c = getattr(answer, "completion_tokens", None)
        if p is None:
            p = self.prompt_tokens(messages, images)
        if c is None:
            c = len(self.processor.tokenizer(str(answer), add_special_tokens=False)["input_ids"]) + 1
        return p, c

    @torch.inference_mode()
    def generate(self, convs: list[tuple[list[dict], list]], sampling: Sampling | None = None,
                 emit=None, cancelled=None) -> list[Answer]:
        """convs: [(messages, images)] with '<image>' placeholders; returns one :class:`Answer` per conversation
        (the text, with token counts and the finish reason as attributes).

        ``emit(row, piece)``, if given, is called as each row's text grows (text from a stop string on is never
        emitted; the pieces join to exactly the row's Answer, stripped as it is); ``cancelled(row)`` true ends
        that row early. With an answer head, each row's answer is emitted whole once the batch is done."""
        sampling = sampling or Sampling()
        with self.lock, answering_attention(self.device):
            _seed(sampling)
            head = None if sampling.free_decoding else self.answer_head
            structured = head is None and _structured.applies(self, sampling)  # a head's Assessment as the JSON
            if head is None and not structured:
                return self._decode(convs, sampling, emit, cancelled)
            with _structured.trust(self.answer_head, sampling, structured):
                texts = (_structured.answers(self.answer_head, convs, sampling) if structured
                         else list(head.answer(convs, sampling)))
            free = [k for k, a in enumerate(texts) if a is None]
            if free:
                for k, a in zip(free, self._decode([convs[k] for k in free], sampling)):
                    texts[k] = a
        result = head_answers(self, convs, texts, sampling, whole=structured)  # cut at max_new_tokens
        if sampling.logprobs is not None:  # the head's text, scored by the model
            with self.lock, answering_attention(self.device):
                score_answers(self, convs, result, sampling)
        if emit is not None:
            for i, a in enumerate(result):
                emit(i, a)
        return result

    def _decode(self, convs, sampling: Sampling, emit=None, cancelled=None) -> list[Answer]:
        """Free decoding of a batch (the lock is held), streamed per row when ``emit`` is given."""
        from .streaming import RowCancel, RowStreamer

        inputs = self._inputs(convs)
        kw, crit, filters = {}, [], []
        if emit is not None:
            # each row's text as answers() makes it: cut at a stop string, then stripped
            sinks = [StripFilter(lambda s, i=i: emit(i, s)) for i in range(len(convs))]
            if sampling.stop:
                filters = sinks = [StopFilter(sampling.stop, sink) for sink in sinks]
            kw["streamer"] = RowStreamer(self.processor.tokenizer, len(convs), lambda i, s: sinks[i](s))
            crit = [RowCancel(cancelled)] if cancelled else []
        out = self.model.generate(**inputs, **self.generate_kwargs(sampling), pad_token_id=self.pad_id, **kw,
                                  **extra_kwargs(self, inputs, sampling, crit))
        for f in filters:
            f.flush()
        return answers(self, inputs, out, sampling)

    def stream(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> Iterator[str]:
        """Yield text pieces as they are generated (one conversation), through :meth:`generate`, so every
        setting it honours applies here too: stop strings (no text from a stop string on is yielded), JSON
        constraints, log-probs; an answer head's answer comes in one piece. The iterator's return value
        (``StopIteration.value``) is the final :class:`Answer` with its counts and finish reason.

        A generation error is re-raised to the consumer (never a silent hang), and closing the iterator early
        (client gone, Ctrl-C) stops generation at the next token so the engine is free for the next request.
        """
        import queue

        sampling = sampling or Sampling()
        pieces, cancel, end, result = queue.SimpleQueue(), threading.Event(), object(), []

        def work():
            try:
                result.append(self.generate([(messages, images)], sampling, emit=lambda _row, s: pieces.put(s),
                                            cancelled=lambda _row: cancel.is_set())[0])
            except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                result.append(e)
            finally:
                pieces.put(end)  # after generate() released the lock

        threading.Thread(target=work, daemon=True).start()
        try:
            while (piece := pieces.get()) is not end:
                yield piece
        finally:
            cancel.set()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]


def _seed(sampling: Sampling) -> None:
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
