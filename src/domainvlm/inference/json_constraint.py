"""Constrained JSON decoding: at each step only tokens that keep the answer a valid prefix of a JSON value
(``json_object``) or of an instance of a simple JSON schema (``json_schema``) may be chosen, and the end of
sequence only once the value is complete. A model therefore answers parseable, schema-valid JSON unless it
runs out of ``max_tokens`` first (then ``finish_reason`` is ``length``).

The schema subset (enough for labels, findings, yes/no and scores): ``type`` (one name or a list),
``properties``, ``required``, ``additionalProperties`` (false, true or a schema), ``items``, ``minItems``,
``maxItems``, ``enum``, ``const``, plus the annotations ``title``, ``description``, ``$schema``. Any other
keyword is refused up front (:func:`check_schema`) rather than silently not enforced. Insignificant
whitespace is limited to one space after ``:`` and ``,`` so a model cannot pad forever. Numbers are limited
too (:data:`MAX_DIGITS` significant digits, a :data:`MAX_EXP_DIGITS`-digit exponent, :data:`MAX_NUMBER_CHARS`
characters), and every admitted prefix can still be completed within the limits. A character that the
tokenizer splits over several tokens (half of it decodes as U+FFFD) is not generated; where that leaves no
token to go on with, the answer ends there and is reported as cut short (``finish_reason`` ``length``).
"""

from __future__ import annotations

import json

import torch
from transformers import LogitsProcessor

ANNOTATIONS = {"title", "description", "$schema", "default", "examples"}
KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum",
            "const"} | ANNOTATIONS
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
ANY: dict = {}  # the schema every JSON value satisfies
OBJECT = {"type": "object"}  # json_object mode
MAX_NUMBER_CHARS = 24  # a number's whole text, sign and exponent included
MAX_DIGITS = 15  # significant digits: exact in a float64 (and a JavaScript number); no 20-digit garbage
MAX_EXP_DIGITS = 2  # |exponent| <= 99: with MAX_DIGITS, every admitted number is a finite float
_END = "\x00"  # never valid in JSON text: appended, it ends a top-level number without extending it
_ESC = set('"\\/bfnrt')


class SchemaError(ValueError):
    """A schema outside the supported subset; the message names the JSON path."""


class _Partial(Exception):
    """The text ended inside a value that can still be completed."""


class _Invalid(Exception):
    pass


def check_schema(schema, where: str = "schema") -> None:
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: must be an object")
    extra = sorted(set(schema) - KEYWORDS)
    if extra:
        raise SchemaError(f"{where}.{extra[0]}: keyword not supported (supported: {', '.join(sorted(KEYWORDS))})")
    types = schema.get("type")
    for t in types if isinstance(types, list) else ([types] if types is not None else []):
        if t not in TYPES:
            raise SchemaError(f"{where}.type: unknown type {t!r}")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.properties.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema(schema["additionalProperties"], f"{where}.additionalProperties")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise SchemaError(f"{where}.enum: must be a non-empty list")
    # schemas no value satisfies: decoding under them could only end in invalid JSON
    if types == []:
        raise SchemaError(f"{where}.type: must name at least one type")
    lo, hi = schema.get("minItems", 0), schema.get("maxItems")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        raise SchemaError(f"{where}.minItems: more than maxItems")
    props = schema.get("properties") or {}
    if schema.get("additionalProperties", not props) is False:
        for name in schema.get("required") or []:
            if name not in props:
                raise SchemaError(f"{where}.required: {name!r} is not among the properties allowed")


def _literal(s: str, i: int, lit: str) -> int:
    n = min(len(lit), len(s) - i)
    if s[i:i + n] != lit[:n]:
        raise _Invalid
    if n < len(lit):
        raise _Partial
    return i + n


def _one_of(s: str, i: int, lits: list[str]) -> int:
    """Match the longest complete literal that fits; a prefix of any literal is partial."""
    best, partial = None, False
    for lit in lits:
        try:
            j = _literal(s, i, lit)
            best = j if best is None or j > best else best
        except _Partial:
            partial = True
        except _Invalid:
            pass
    if best is not None and (not partial or best < len(s)):
        return best
    if partial:
        raise _Partial
    raise _Invalid


def _ws(s: str, i: int) -> int:
    return i + 1 if i < len(s) and s[i] == " " else i


def _string(s: str, i: int) -> int:
    if i >= len(s):
        raise _Partial
    if s[i] != '"':
        raise _Invalid
    i += 1
    while True:
        if i >= len(s):
            raise _Partial
        c = s[i]
        if c == '"':
            return i + 1
        if c == "\\":
            if i + 1 >= len(s):
                raise _Partial
            if s[i + 1] == "u":
                hexes = s[i + 2:i + 6]
                if any(h not in "0123456789abcdefABCDEF" for h in hexes):
                    raise _Invalid
                if len(hexes) < 4:
                    raise _Partial
                i += 6
                continue
            if s[i + 1] not in _ESC:
                raise _Invalid
            i += 2
            continue
        if ord(c) < 0x20:
            raise _Invalid
        i += 1


def _run(s: str, j: int) -> int:
    """End of the run of ASCII digits at ``j`` (``str.isdigit`` also takes '²' and other scripts' digits)."""
    while j < len(s) and "0" <= s[j] <= "9":
        j += 1
    return j


def _number(s: str, i: int, integer: bool) -> int:
    """A JSON number within the limits above (an integer: no fraction or exponent). A prefix is admitted only
    if it can still be completed within them: not a number of MAX_NUMBER_CHARS ending in 'E-' (no digit
    fits), nor a '.' after MAX_DIGITS significant digits. Checking the limits only once they are exceeded
    let such dead ends through, and the constraint then had to end the answer as invalid JSON."""
    n = len(s)
    j = i + 1 if i < n and s[i] == "-" else i
    k, j = j, _run(s, j)
    if j - k > 1 and s[k] == "0":  # no leading zeros
        raise _Invalid
    mantissa, need = s[k:j], int(j == k)  # need: one more digit is required to complete the number
    if not need and not integer and j < n and s[j] == ".":
        k, j = j + 1, _run(s, j + 1)
        mantissa, need = mantissa + s[k:j], int(j == k)
    mantissa_need = need  # that digit is a significant one ('1.' needs a fraction digit, '-' one digit)
    if not need and not integer and j < n and s[j] in "eE":
        j += 1
        if j < n and s[j] in "+-":
            j += 1
        k, j = j, _run(s, j)
        if j - k > MAX_EXP_DIGITS:
            raise _Invalid
        need, mantissa_need = int(j == k), 0
    if len(mantissa.lstrip("0")) + mantissa_need > MAX_DIGITS or j - i + need > MAX_NUMBER_CHARS:
        raise _Invalid
    if j < n:  # the next character ends the number (the enclosing value checks it)
        if need:
            raise _Invalid
        return j
    raise _Partial


def value(schema: dict, s: str, i: int) -> int:
    """Parse one value of ``schema`` from s[i:]; the end index, or _Partial / _Invalid."""
    if "const" in schema or "enum" in schema:
        vals = [schema["const"]] if "const" in schema else schema["enum"]
        return _one_of(s, i, [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in vals])
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else ({types} if types else TYPES)
    if i >= len(s):
        raise _Partial
    c = s[i]
    if c == "{" and "object" in types:
        return _object(schema, s, i)
    if c == "[" and "array" in types:
        return _array(schema, s, i)
    if c == '"' and "string" in types:
        return _string(s, i)
    if (c == "-" or c.isdigit()) and types & {"number", "integer"}:
        return _number(s, i, integer="number" not in types)
    lits = [lit for t, lit in (("boolean", "true"), ("boolean", "false"), ("null", "null")) if t in types]
    if lits:
        return _one_of(s, i, lits)
    raise _Invalid


def _object(schema: dict, s: str, i: int) -> int:
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties", not props)
    extra = ANY if extra is True else extra
    required = set(schema.get("required") or [])
    seen: set = set()
    i += 1
    while True:
        if i >= len(s):
            raise _Partial
        if s[i] == "}":
            if required - seen:
                raise _Invalid
            return i + 1
        if seen:
            if s[i] != ",":
                raise _Invalid
            i = _ws(s, i + 1)
        names = [n for n in props if n not in seen]
        if extra is False:
            if not names:
                raise _Invalid
            end = _one_of(s, i, [json.dumps(n, ensure_ascii=False) for n in names])
        else:
            end = _string(s, i)
        key = json.loads(s[i:end])
        if key in seen:
            raise _Invalid
        seen.add(key)
        sub = props.get(key, extra if extra is not False else None)
        if sub is None:
            raise _Invalid
        i = _literal(s, end, ":")
        i = value(sub, s, _ws(s, i))


def _array(schema: dict, s: str, i: int) -> int:
    items = schema.get("items", ANY)
    lo, hi = schema.get("minItems", 0), schema.get("maxItems")
    n = 0
    i += 1
    while True:
        if i >= len(s):
            raise _Partial
        if s[i] == "]":
            if n < lo:
                raise _Invalid
            return i + 1
        if n:
            if s[i] != ",":
                raise _Invalid
            i = _ws(s, i + 1)
        if hi is not None and n >= hi:
            raise _Invalid
        i = value(items, s, i)
        n += 1


def state(schema: dict, text: str) -> str:
    """'complete', 'partial' (a valid prefix) or 'invalid'. A top-level number ("12") is complete, though
    more digits may follow."""
    return _state(schema, text)[0]


def _state(schema: dict, text: str) -> tuple[str, bool]:
    """The state, and whether more text may follow (a partial value, or a complete top-level number)."""
    try:
        end = value(schema, text, 0)
    except _Partial:
        try:
            ends = value(schema, text + _END, 0) == len(text)
        except (_Partial, _Invalid, json.JSONDecodeError):
            ends = False
        return ("complete" if ends else "partial"), True
    except (_Invalid, json.JSONDecodeError):
        return "invalid", False
    return ("complete" if end == len(text) else "invalid"), False


class JsonLogits(LogitsProcessor):
    """Masks every token that would break the JSON; tries candidates in order of score and keeps the best
    ``keep`` valid ones (1 for greedy decoding, more so sampling still has a choice)."""

    def __init__(self, schema: dict, tokenizer, prompt_len: int, eos_ids: list[int], keep: int = 1):
        self.schema, self.tok, self.start, self.eos, self.keep = schema, tokenizer, prompt_len, eos_ids, keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            gen = input_ids[row, self.start:].tolist()
            text = self.tok.decode(gen, skip_special_tokens=True)
            st, more = _state(self.schema, text)
            allowed = self._allowed(gen, text, scores[row]) if more else []
            if st == "complete":
                allowed = allowed + self.eos
            if allowed:
                out[row, allowed] = scores[row, allowed]
            else:  # no token continues the value (the tokenizer cannot spell it): end here; the answer
                out[row, self.eos] = 0.0  # is reported cut short (generation.answers: 'length')
        return out

    def _allowed(self, gen: list[int], text: str, row: torch.Tensor) -> list[int]:
        order = torch.argsort(row, descending=True).tolist()
        allowed = self._scan(gen, text, row, order[:FAST])
        if len(allowed) < self.keep:  # the model's favourites break the JSON: look further, filtered cheaply
            firsts = self._next_chars(text)
            pieces = _pieces(self.tok, row.shape[0])
            rest = [t for t in order[FAST:] if pieces[t][:1] in firsts or (pieces[t][:1] > "~" and "\x80" in firsts)]
            allowed += self._scan(gen, text, row, rest, self.keep - len(allowed))
        return allowed

    def _scan(self, gen, text, row, ids, want=None) -> list[int]:
        want = want or self.keep
        out, eos = [], set(self.eos)
        for tid in ids:
            if tid in eos or row[tid] == float("-inf"):
                continue
            cand = self.tok.decode(gen + [tid], skip_special_tokens=True)
            # half a multi-byte character decodes as U+FFFD: such tokens are skipped (a character the
            # tokenizer splits over several tokens cannot be generated under a constraint)
            if len(cand) <= len(text) or not cand.startswith(text) or "\ufffd" in cand[len(text):]:
                continue
            if state(self.schema, cand) != "invalid":
                out.append(tid)
                if len(out) >= want:
                    break
        return out

    def _next_chars(self, text: str) -> set:
        """Characters that may come next ('\\x80' stands for any non-ASCII one)."""
        ok = {c for c in _ASCII if state(self.schema, text + c) != "invalid"}
        if state(self.schema, text + "\u00e9") != "invalid":
            ok.add("\x80")
        return ok


FAST = 64
_ASCII = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
_PIECES: dict = {}


def _pieces(tok, vocab: int) -> list[str]:
    """Each token id's text on its own (cached per tokenizer): a cheap first-character filter."""
    k = (id(tok), vocab)
    if k not in _PIECES:
        n = len(tok)  # a model's logits may be padded past the tokenizer's vocabulary: those ids are never text
        _PIECES[k] = [tok.decode([i]) if i < n else "" for i in range(vocab)]
    return _PIECES[k]
