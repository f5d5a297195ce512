"""LLM-assisted data: translate, paraphrase or derive Q&A from record text through any OpenAI-compatible
chat endpoint (vLLM, `domainvlm serve`, a hosted API) - the way XrayGLM translated its reports and WaferGLM
generated its Q&A, made repeatable.

Every text piece is one call, cached by a hash of (prompt version, task, model, text) in ``<out>.cache.jsonl``,
which is appended as answers arrive: a rerun (after a crash, Ctrl-C or failed records) calls only what is
missing. Calls run concurrently up to a limit; connection errors, 429 and 5xx are retried with exponential
backoff (``Retry-After`` honoured), and so is a malformed reply. A record whose calls still fail is reported in
``<out>.errors.jsonl`` and left out; the output is written atomically, never half-written. Rewritten records
keep the original conversation in ``meta.original_messages``.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import UserError
from .record import IMAGE_TOKEN, Record

PROMPT_VERSION = 1
RETRY_STATUS = {429, 500, 502, 503, 504}
_KEEP = "Keep technical terms, numbers, units and the layout (line breaks, list markers, 'Diagnosis:' style prefixes)."
PROMPTS = {
    "translate-zh": f"Translate the user's text into Simplified Chinese. {_KEEP} Reply with the translation only.",
    "translate-en": f"Translate the user's text into English. {_KEEP} Reply with the translation only.",
    "paraphrase": f"Rewrite the user's text with different wording but exactly the same meaning, in the same "
                  f"language. {_KEEP} Reply with the rewritten text only.",
    "qa": "The user's text describes one image (a report or diagnosis). Write 3 question-answer pairs about the "
          "image that the text alone answers. Reply with JSON only: "
          '[{"question": "...", "answer": "..."}, ...], in the language of the text.',
}
SUFFIX = {"translate-zh": "zh", "translate-en": "en", "paraphrase": "para", "qa": "qa"}


class CallError(Exception):
    """One call failed for good (after retries); the message says why."""


@dataclass
class Client:
    endpoint: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    temperature: float = 0.2
    max_tokens: int = 1024
    sleep: object = time.sleep  # tests pass a fast one

    @property
    def url(self) -> str:
        e = self.endpoint.rstrip("/")
        return e if e.endswith("/chat/completions") else e + "/chat/completions"

    def _post(self, body: dict) -> tuple[int, dict | None, str | None]:
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
                status, retry_after = r.status, None
        except urllib.error.HTTPError as e:
            raw, status, retry_after = e.read(), e.code, e.headers.get("Retry-After")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        return status, data, retry_after

    def chat(self, system: str, text: str, check=None) -> tuple[str, dict]:
        """(reply text, usage) for one call, retried on transport errors, 429/5xx and malformed replies."""
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]}
        why = "no attempt"
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2 ** attempt * (1 + random.random() * 0.25)
            try:
                status, data, retry_after = self._post(body)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                why = f"endpoint unreachable ({getattr(e, 'reason', e)})"
            else:
                if status == 200:
                    try:
                        out = data["choices"][0]["message"]["content"]
                        if not isinstance(out, str) or not out.strip():
                            raise ValueError("empty content")
                        if check:
                            check(out)
                        return out.strip(), data.get("usage") or {}
                    except (KeyError, IndexError, TypeError, ValueError) as e:
                        why = f"malformed reply ({e.__class__.__name__}: {e})"
                elif status in RETRY_STATUS:
                    why = f"HTTP {status}"
                    if retry_after and retry_after.strip().isdigit():
                        wait = min(60.0, float(retry_after))
                else:  # other 4xx: a request the endpoint will never accept
                    msg = (data or {}).get("error", {}).get("message") if isinstance(data, dict) else None
                    raise CallError(f"HTTP {status}" + (f": {msg}" if msg else ""))
            if attempt < self.retries:
                self.sleep(wait)
        raise CallError(f"{why}, after {self.retries + 1} attempt(s)")


def parse_qa(text: str) -> list[dict]:
    s = text.strip()
    if s.startswith("```"):  # models like to fence JSON
        s = s.strip("`").split("\n", 1)[-1] if "\n" in s else s
        s = s.rsplit("```", 1)[0]
    pairs = json.loads(s)
    if not isinstance(pairs, list) or not pairs or not all(
            isinstance(p, dict) and isinstance(p.get("question"), str) and isinstance(p.get("answer"), str)
            and p["question"].strip() and p["answer"].strip() for p in pairs):
        raise ValueError("expected a JSON list of {question, answer}")
    return pairs


def units(rec: Record, task: str) -> list[str]:
    """The texts of one record that the task sends to the LLM."""
    if task == "qa":
        return ["\n".join(m["content"] for m in rec.messages if m["role"] == "assistant")]
    roles = ("assistant",) if task == "paraphrase" else ("user", "assistant", "system")
    return [p.strip() for m in rec.messages if m["role"] in roles for p in m["content"].split(IMAGE_TOKEN)
            if p.strip()]


def rebuild(rec: Record, task: str, done: dict, tokens: dict) -> Record:
    """The rewritten record from the answers in ``done`` (text -> reply)."""
    meta = {**rec.meta, "original_messages": rec.meta.get("original_messages") or rec.messages,
            "rewrite": {"task": task, "source_id": rec.id, **tokens}}
    if task == "qa":
        extra = []
        for p in parse_qa(done[units(rec, task)[0]]):
            extra += [{"role": "user", "content": p["question"].strip()},
                      {"role": "assistant", "content": p["answer"].strip()}]
        msgs = [dict(m) for m in rec.messages] + extra
    else:
        roles = ("assistant",) if task == "paraphrase" else ("user", "assistant", "system")
        msgs = []
        for m in rec.messages:
            if m["role"] not in roles:
                msgs.append(dict(m))
                continue
            parts = m["content"].split(IMAGE_TOKEN)
            new = [_swap(p, done) for p in parts]
            msgs.append({**m, "content": IMAGE_TOKEN.join(new)})
        if task.startswith("translate"):
            meta["lang"] = SUFFIX[task]
    return Record(id=f"{rec.id}-{SUFFIX[task]}", images=list(rec.images), messages=msgs,
                  labels=_text_labels(rec.labels, msgs, task, done), meta=meta)


def _text_labels(labels: dict, msgs: list[dict], task: str, done: dict) -> dict:
    """A report's labels follow its rewritten text: ``report`` is the first answer (what eval scores, in the
    language it is scored in); findings/impression become their rewrites, or None where never sent alone."""
    labels = dict(labels)
    if task == "qa" or not isinstance(labels.get("report"), str):
        return labels
    labels["report"] = next(m["content"] for m in msgs if m["role"] == "assistant")
    for f in ("findings", "impression"):
        if isinstance(labels.get(f), str):
            labels[f] = done.get(labels[f].strip())
    if task.startswith("translate") and "lang" in labels:
        labels["lang"] = SUFFIX[task]
    return labels


def _swap(part: str, done: dict) -> str:
    s = part.strip()
    if not s:
        return part
    lead, trail = part[:len(part) - len(part.lstrip())], part[len(part.rstrip()):]
    return lead + done[s] + trail


def key(task: str, model: str, text: str) -> str:
    return hashlib.sha256(json.dumps([PROMPT_VERSION, task, model, text]).encode()).hexdigest()


@dataclass
class Cache:
    """Append-only JSONL of finished calls: {key, reply, usage}."""

    path: object
    items: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self):
        from pathlib import Path

        p = Path(self.path)
        if p.exists():
            for line in p.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                    self.items[d["key"]] = d
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a crash: that call is simply made again
        return self

    def add(self, k: str, reply: str, usage: dict) -> None:
        with self.lock:
            self.items[k] = {"key": k, "reply": reply, "usage": usage}
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self.items[k], ensure_ascii=False) + "\n")


def rewrite(records: list[Record], task: str, client: Client, cache: Cache, concurrency: int = 8,
            progress: bool = True) -> tuple[list[Record], list[dict], dict]:
    """(rewritten records, errors [{id, error}], stats)."""
    from tqdm import tqdm

    if task not in PROMPTS:
        raise UserError(f"--task: {task!r} is not one of {', '.join(PROMPTS)}")
    todo = {t for r in records for t in units(r, task)}
    missing = sorted(t for t in todo if key(task, client.model, t) not in cache.items)
    failed: dict[str, str] = {}
    stats = {"calls": 0, "cached": len(todo) - len(missing), "prompt_tokens": 0, "completion_tokens": 0}
    check = parse_qa if task == "qa" else None
    bar = tqdm(total=len(missing), unit="call", desc=f"rewrite {task}", disable=not progress)

    def one(text: str) -> None:
        try:
            reply, usage = client.chat(PROMPTS[task], text, check)
            cache.add(key(task, client.model, text), reply, usage)
        except CallError as e:
            failed[text] = str(e)
        bar.update(1)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, missing))
    bar.close()
    stats["calls"] = len(missing)
    out, errors = [], []
    for r in records:
        us = units(r, task)
        bad = next((t for t in us if t in failed), None)
        if bad is not None:
            errors.append({"id": r.id, "error": failed[bad], "text": bad[:200]})
            continue
        hits = [cache.items[key(task, client.model, t)] for t in us]
        tok = {k: sum(int((h.get("usage") or {}).get(k) or 0) for h in hits)
               for k in ("prompt_tokens", "completion_tokens")}
        for k in tok:
            stats[k] += tok[k]
        try:
            out.append(rebuild(r, task, {t: h["reply"] for t, h in zip(us, hits)}, tok))
        except (ValueError, KeyError) as e:  # a cached reply that no longer parses
            errors.append({"id": r.id, "error": f"malformed reply ({e})", "text": us[0][:200]})
    return out, errors, stats
