"""Log-prob ``bytes`` are each token's own bytes: concatenated they rebuild the text, CJK included, though a
token holding part of a character decodes alone to U+FFFD."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from domainvlm.inference.engine import Engine, Sampling
from domainvlm.inference.token_bytes import TokenBytes

ZH = "晶圆边缘出现环状缺陷，良率下降。"


class Force(LogitsProcessor):
    """Make generate() pick ``ids`` in order (the tiny model is untrained: its own choice is arbitrary)."""

    def __init__(self, ids, start):
        self.ids, self.start = ids, start

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, float("-inf"))
        out[:, self.ids[min(input_ids.shape[1] - self.start, len(self.ids) - 1)]] = 0
        return out


def forcing(monkeypatch, eng, ids):
    """``eng.model.generate`` answers with ``ids`` (and its real logits) whatever the prompt."""
    real = eng.model.generate

    def generate(**kw):
        return real(**kw, logits_processor=LogitsProcessorList([Force(ids, kw["input_ids"].shape[1])]))
    monkeypatch.setattr(eng.model, "generate", generate)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir, device="cpu")


def test_byte_level_tokens_give_their_own_bytes(engine):
    tok = engine.processor.tokenizer
    ids = tok(ZH, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tok.decode([i]) for i in ids), "no token splits a character: the test proves nothing"
    to_bytes = TokenBytes(tok)
    assert b"".join(bytes(to_bytes(i)) for i in ids) == ZH.encode("utf-8")
    assert to_bytes(tok.convert_tokens_to_ids("¡")) == [0xA1]  # the byte-level character for byte 0xA1
    assert bytes(to_bytes(tok.eos_token_id)) == tok.eos_token.encode()  # added tokens are stored as text


def test_sentencepiece_byte_fallback_tokens_give_their_byte():
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}, "▁": 257, "h": 258, "i": 259, "hi": 260, "▁hi": 261}
    sp = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "i"), ("▁", "hi")], byte_fallback=True, unk_token="<unk>"))
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>")
    ids = tok("hi 晶圆", add_special_tokens=False)["input_ids"]
    assert "<0xE6>" in tok.convert_ids_to_tokens(ids)
    to_bytes = TokenBytes(tok)
    assert to_bytes(vocab["<0xE6>"]) == [0xE6]
    assert b"".join(bytes(to_bytes(i)) for i in ids) == " hi 晶圆".encode()  # '▁' is the space before a word


def test_engine_logprob_bytes_rebuild_chinese_text(engine, monkeypatch):
    tok = engine.processor.tokenizer
    ids = tok(ZH, add_special_tokens=False)["input_ids"]
    forcing(monkeypatch, engine, ids)
    a = engine.generate([([{"role": "user", "content": "hi"}], [])],
                        Sampling(max_new_tokens=len(ids), temperature=0, logprobs=2))[0]
    assert str(a) == ZH and len(a.logprobs) == len(ids)
    assert b"".join(bytes(e["bytes"]) for e in a.logprobs) == ZH.encode("utf-8")
    assert any(e["token"] == "\ufffd" for e in a.logprobs)  # 'token' still shows the lone piece decoded
    top = [t for e in a.logprobs for t in e["top_logprobs"]]
    assert len(top) == 2 * len(ids) and all(t["bytes"] for t in top)
