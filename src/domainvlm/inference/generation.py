"""What one generated answer carries besides its text: token counts, why it ended, and token log-probs.

:class:`Answer` is a ``str`` (every caller that wants only the text keeps working) with those facts as
attributes, all read from the generated ids rather than guessed from re-tokenised text.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .token_bytes import TokenBytes


class Answer(str):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # 'stop' (end of turn or a stop string) | 'length' (max_new_tokens reached, or a JSON constraint ended the
    # answer short of a complete value)
    finish_reason: str = "stop"
    logprobs: list | None = None  # [{'token', 'logprob', 'bytes', 'top_logprobs': [...]}] when asked for
    assessment = None  # an answer head's structured answer (inference/assessment.Assessment), if any

    @classmethod
    def make(cls, text: str, **facts) -> "Answer":
        a = cls(text)
        for k, v in facts.items():
            setattr(a, k, v)
        return a


def cut_at_stop(text: str, stops) -> tuple[str, bool]:
    """Text up to (not including) the earliest stop string, and whether one was found (OpenAI semantics)."""
    hits = [i for i in (text.find(s) for s in stops or ()) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


class StopStrings(StoppingCriteria):
    """Finish each row once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer, stops, prompt_len: int):
        self.tok, self.stops, self.start = tokenizer, list(stops), prompt_len

    def __call__(self, input_ids, scores, **kw):
        texts = self.tok.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


def extra_kwargs(engine, inputs: dict, sampling, criteria=()) -> dict:
    """generate() keyword arguments for stop strings, JSON constraints and log-probs."""
    tok = engine.processor.tokenizer
    start = inputs["input_ids"].shape[1]
    crit = list(criteria)
    if sampling.stop:
        crit.append(StopStrings(tok, sampling.stop, start))
    kw = {"stopping_criteria": StoppingCriteriaList(crit)} if crit else {}
    if sampling.json_schema is not None:
        import json

        from .json_constraint import JsonLogits

        keep = 1 if not sampling.temperature else 20
        kw["logits_processor"] = LogitsProcessorList([JsonLogits(json.loads(sampling.json_schema), tok, start,
                                                                 engine.eos_ids, keep)])
    if sampling.logprobs is not None:
        kw.update(output_logits=True, return_dict_in_generate=True)
    return kw


def answers(engine, inputs: dict, out, sampling) -> list[Answer]:
    """Generated ids (and logits) -> Answers: text cut at stop strings, counts, finish reasons."""
    tok = engine.processor.tokenizer
    seqs = out.sequences if hasattr(out, "sequences") else out
    start = inputs["input_ids"].shape[1]
    prompt = inputs["attention_mask"].sum(dim=1).tolist() if "attention_mask" in inputs else [start] * len(seqs)
    eos = set(engine.eos_ids)
    to_bytes = TokenBytes(tok) if sampling.logprobs is not None else None
    schema = None
    if sampling.json_schema is not None:
        import json

        from .json_constraint import state

        schema = json.loads(sampling.json_schema)
    result = []
    for r, row in enumerate(seqs[:, start:].tolist()):
        n = next((k + 1 for k, t in enumerate(row) if t in eos), None)
        text = tok.decode(row[:n] if n else row, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, sampling.stop)
        if stopped and n is None:  # count the tokens up to the one that completed the stop string
            n = next((k + 1 for k in range(len(row)) if cut_at_stop(tok.decode(row[:k + 1], skip_special_tokens=True),
                                                                   sampling.stop)[1]), len(row))
        finish = "stop" if (n is not None or stopped) else ("length" if len(row) >= sampling.max_new_tokens
                                                            else "stop")
        if schema is not None and n is not None and not stopped and \
                state(schema, tok.decode(row[:n - 1], skip_special_tokens=True)) != "complete":
            finish = "length"  # JsonLogits found no token to go on with: cut short, never 'stop' with bad JSON
        count = n if n is not None else len(row)
        lp = _logprobs(tok, to_bytes, out.logits, r, row[:count], sampling.logprobs) if to_bytes else None
        # stripped, as the streamed pieces are (StripFilter): both are the same text
        result.append(Answer.make(text.strip(), prompt_tokens=int(prompt[r]), completion_tokens=count,
                                  finish_reason=finish, logprobs=lp))
    return result


def _logprobs(tok, to_bytes, logits, row: int, ids: list[int], top: int) -> list[dict]:
    items = []
    for k, t in enumerate(ids):
        lp = torch.log_softmax(logits[k][row].float(), dim=-1)
        entry = _entry(tok, to_bytes, t, lp[t].item())
        if top:
            vals, idx = lp.topk(top)
            entry["top_logprobs"] = [_entry(tok, to_bytes, i, v) for i, v in zip(idx.tolist(), vals.tolist())]
        else:
            entry["top_logprobs"] = []
        items.append(entry)
    return items


def _entry(tok, to_bytes, tid: int, logprob: float) -> dict:
    # 'token' is the token decoded alone (U+FFFD for part of a character); 'bytes' its own bytes, so that
    # concatenating them rebuilds the text (OpenAI semantics)
    return {"token": tok.decode([tid]), "logprob": max(logprob, -9999.0), "bytes": to_bytes(tid)}


def score_answers(engine, convs, result: list[Answer], sampling) -> None:
    """Log-probs of the answers the model did not decode itself (an answer head's): its raw distribution at each
    token of the returned text, teacher-forced after the prompt in one forward per answer, so they describe
    the tokens returned (plus the end-of-turn token where the answer ended, as decoded ones count it). A head
    keeps answering with log-probs on: skipping it left the language, the diagnosis and the follow-ups to a
    compact model's raw decoding (an English follow-up came back in Chinese). Call under the engine's lock."""
    tok = engine.processor.tokenizer
    to_bytes = TokenBytes(tok)
    end = tok.eos_token_id if tok.eos_token_id is not None else engine.eos_ids[0]
    for k, a in enumerate(result):
        if a.logprobs is not None:  # decoded freely: scored as generated
            continue
        ids = tok(str(a), add_special_tokens=False)["input_ids"] + ([end] if a.finish_reason == "stop" else [])
        inputs = engine._inputs([convs[k]])
        prompt = inputs["input_ids"]
        for key, v in list(inputs.items()):  # every per-token key grows: ids, mask 1, token types 0 (text)
            if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == prompt.shape:
                fill = ids if key == "input_ids" else [1 if key == "attention_mask" else 0] * len(ids)
                inputs[key] = torch.cat([v, torch.tensor([fill], dtype=v.dtype, device=v.device)], dim=1)
        # logits of the last len(ids) + 1 positions: the one before each answer token predicts it
        logits = engine.model(**inputs, use_cache=False, logits_to_keep=len(ids) + 1).logits[0, :len(ids)]
        lp = _logprobs(tok, to_bytes, logits[:, None], 0, ids, sampling.logprobs) if ids else []
        result[k] = Answer.make(str(a), prompt_tokens=int(prompt.shape[1]), completion_tokens=len(ids),
                                finish_reason=a.finish_reason, logprobs=lp, assessment=a.assessment)


def head_answers(engine, convs, texts: list[str], sampling, whole: bool = False) -> list[Answer]:
    """An answer head's texts as Answers, cut at stop strings and, where ``sampling.cut_head_answers`` (the
    API's max_tokens, the CLI's --max-new-tokens), at ``sampling.max_new_tokens`` tokens of the model's
    tokenizer: where free decoding would have run out of tokens, so does the head's answer, with
    ``finish_reason`` 'length'. Evaluation keeps head answers whole (its limit is for free decoding), and its
    hot path tokenizes nothing. ``whole``: the head's structured JSON (response_format), one value rather than
    decoded text, is not cut (cut, it would not parse; evidence for a large pattern runs to thousands of
    tokens). ``completion_tokens`` of an answer not tokenized here is counted on demand
    (:meth:`Engine.count_usage`). A structured answer's assessment is kept."""
    n = sampling.max_new_tokens
    cut = getattr(sampling, "cut_head_answers", False) and not whole
    out, todo = list(texts), []
    for k, text in enumerate(texts):
        a = getattr(text, "assessment", None)  # a head's structured answer rides on its text
        if isinstance(text, Answer) and a is None:  # decoded freely by the model: already counted and cut
            continue
        text = cut_at_stop(str(text), sampling.stop)[0]
        if cut and len(text.encode("utf-8")) + 1 >= n:  # a token holds >= 1 byte: shorter ones cannot reach n
            out[k] = (text, a)
            todo.append(k)
        else:
            out[k] = Answer.make(text, completion_tokens=None, finish_reason="stop", assessment=a)
    if not todo:
        return out
    tok = engine.processor.tokenizer
    for k, ids in zip(todo, tok([out[k][0] for k in todo], add_special_tokens=False)["input_ids"]):
        text, a = out[k]
        if len(ids) >= n:  # no room left for the end-of-turn token: 'length', as free decoding
            text = tok.decode(ids[:n], skip_special_tokens=True).strip() if len(ids) > n else text
            out[k] = Answer.make(text, completion_tokens=n, finish_reason="length", assessment=a)
        else:
            out[k] = Answer.make(text, completion_tokens=len(ids) + 1, finish_reason="stop", assessment=a)
    return out


class StopFilter:
    """Streaming with stop strings: hold back text that may be the start of a stop string, and send nothing
    from a stop string on."""

    def __init__(self, stops, emit):
        self.stops, self.emit, self.text, self.sent, self.done = list(stops), emit, "", 0, False
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def __call__(self, piece: str) -> None:
        if self.done:
            return
        self.text += piece
        cut, hit = cut_at_stop(self.text, self.stops)
        safe = len(cut) if hit else max(self.sent, len(self.text) - self.hold)
        if safe > self.sent:
            self.emit(self.text[self.sent:safe])
            self.sent = safe
        self.done = hit

    def flush(self) -> None:
        if not self.done and len(self.text) > self.sent:
            self.emit(self.text[self.sent:])
        self.sent = len(self.text)


class StripFilter:
    """Streaming: send exactly what ``str.strip`` keeps of the whole text, so the pieces join to the non-streamed
    answer (which is stripped: a model's leading space or newline is not part of the answer). Leading
    whitespace is never sent; trailing whitespace is held until more text follows it, and never sent if none
    does."""

    def __init__(self, emit):
        self.emit, self.started, self.held = emit, False, ""

    def __call__(self, piece: str) -> None:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return
            self.started = True
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body):]
        if body:
            self.emit(body)
