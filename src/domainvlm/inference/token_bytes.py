"""A token's own bytes, for the ``bytes`` of OpenAI log-probs.

Decoding one token alone is wrong for a token that holds part of a character (most CJK text under a
byte-level BPE or a sentencepiece byte fallback): it gives U+FFFD's bytes, and clients that rebuild the text
by concatenating ``bytes`` get garbage. The vocabulary entry itself holds the real bytes: byte-level BPE
writes each byte as one printable character (GPT-2's ``bytes_to_unicode``), sentencepiece writes a
fallback byte as ``<0xA1>`` and a space as ``▁``.
"""

from __future__ import annotations

import json
import re

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: printable Latin-1 bytes stand for themselves, the other
    bytes were shifted to U+0100 onwards in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in keep]
    return {**{chr(b): b for b in keep}, **{chr(256 + k): b for k, b in enumerate(shifted)}}


BYTE_DECODER = _gpt2_byte_decoder()


def _decoder_types(tok) -> set[str]:
    """The decoder types of a fast tokenizer's pipeline (a Sequence's members included)."""
    dec = getattr(getattr(tok, "backend_tokenizer", None), "decoder", None)
    if dec is None:
        return set()
    found, todo = set(), [json.loads(dec.__getstate__())]
    while todo:
        d = todo.pop()
        if isinstance(d, dict):
            found.add(d.get("type"))
            todo += list(d.values())
        elif isinstance(d, list):
            todo += d
    return found


class TokenBytes:
    """``TokenBytes(tokenizer)(token_id)`` -> the token's UTF-8 bytes as a list of ints."""

    def __init__(self, tok):
        self.tok = tok
        self.byte_level = "ByteLevel" in _decoder_types(tok) or hasattr(tok, "byte_decoder")  # slow GPT-2 too
        self.added = set(getattr(tok, "added_tokens_decoder", None) or ())  # stored as text, not as bytes

    def __call__(self, tid: int) -> list[int]:
        piece = self.tok.convert_ids_to_tokens(int(tid))
        if isinstance(piece, str) and int(tid) not in self.added:
            if self.byte_level:
                if all(c in BYTE_DECODER for c in piece):
                    return [BYTE_DECODER[c] for c in piece]
            elif m := _BYTE_PIECE.fullmatch(piece):  # sentencepiece byte fallback
                return [int(m.group(1), 16)]
            elif "▁" in piece:  # sentencepiece: decoding alone would drop the word's leading space
                return list(piece.replace("▁", " ").encode("utf-8"))
        return list(self.tok.decode([int(tid)]).encode("utf-8"))  # whole characters (WordPiece, added tokens)
