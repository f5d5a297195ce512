"""max_new_tokens holds for answers an answer head writes as for decoded ones: the engine cuts a head's answer
at that many tokens of the model's tokenizer (finish_reason 'length'), whichever head wrote it; streaming
agrees; a head's structured JSON (response_format) is one value and comes back whole."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from domainvlm.inference.assessment import SCHEMA
from domainvlm.inference.engine import Engine, Sampling

Q = "What defect pattern does this wafer map show?"


def wafer_map(seed=0) -> Image.Image:
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    return render_map(synth_map(("Center",), 52, np.random.default_rng(seed)))


@pytest.fixture(scope="module")
def engine(tiny_wafer_head_dir):
    return Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)


def ids_of(engine, text):
    return engine.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def diagnosis(engine, n, **kw):
    return engine.generate([([{"role": "user", "content": f"<image>\n{Q}"}], [wafer_map()])],
                           Sampling(max_new_tokens=n, cut_head_answers=True, **kw))[0]


def test_a_heads_answer_is_cut_at_max_new_tokens(engine):
    full = diagnosis(engine, 256)
    ids = ids_of(engine, full)
    assert full.startswith("Diagnosis:") and len(ids) > 4 and full.assessment is not None
    msgs = [{"role": "user", "content": f"<image>\n{Q}"}]
    assert full.finish_reason == "stop"  # counted on demand (short answers are not tokenized in the hot path)
    assert engine.count_usage(full, msgs, [wafer_map()])[1] == len(ids) + 1  # with the end-of-turn token
    cut = diagnosis(engine, 3)
    assert cut.finish_reason == "length" and cut.completion_tokens == 3
    assert str(cut) == engine.processor.tokenizer.decode(ids[:3]).strip() and full.startswith(str(cut))
    assert cut.assessment is not None and cut.assessment.labels == full.assessment.labels  # kept whole
    exact = diagnosis(engine, len(ids))  # the text fits, its end-of-turn token does not: 'length', as decoded
    assert str(exact) == str(full) and exact.finish_reason == "length" and exact.completion_tokens == len(ids)
    room = diagnosis(engine, len(ids) + 1)
    assert str(room) == str(full) and room.finish_reason == "stop"


def test_evaluation_keeps_a_heads_answer_whole(engine):
    """eval / calibrate / the trainer's val pass build their own Sampling: its limit is for free decoding, and a
    diagnosis cut there would score a right answer wrong."""
    whole = engine.generate([([{"role": "user", "content": f"<image>\n{Q}"}], [wafer_map()])],
                            Sampling(max_new_tokens=3))[0]
    assert str(whole) == str(diagnosis(engine, 256)) and whole.finish_reason == "stop"


def test_text_only_help_answer_is_cut_too(engine):
    hi = [([{"role": "user", "content": "hi"}], [])]
    a = engine.generate(hi, Sampling(max_new_tokens=5, cut_head_answers=True))[0]
    full = engine.generate(hi, Sampling(max_new_tokens=256, cut_head_answers=True))[0]
    assert len(ids_of(engine, full)) > 5, "the help text is short: the test proves nothing"
    assert a.finish_reason == "length" and a.completion_tokens == 5 and len(ids_of(engine, a)) <= 5


def test_stream_agrees_with_generate(engine):
    it = engine.stream([{"role": "user", "content": f"<image>\n{Q}"}], [wafer_map()], Sampling(max_new_tokens=3, cut_head_answers=True))
    pieces = []
    try:
        while True:
            pieces.append(next(it))
    except StopIteration as stop:
        final = stop.value
    assert "".join(pieces) == str(final) == str(diagnosis(engine, 3))
    assert final.finish_reason == "length" and final.completion_tokens == 3


def test_any_heads_answer_is_cut_in_the_engine(tiny_model_dir):
    """The cut is the engine's, not each head's: a head of its own is cut the same way."""
    eng = Engine(str(tiny_model_dir), device="cpu", threads=1)

    class Head:
        def answer(self, convs, sampling):
            return ["Diagnosis: Center\n- Center: failing dies cluster in the middle of the wafer."] * len(convs)

    eng.answer_head = Head()
    a = eng.generate([([{"role": "user", "content": "What defect?"}], [])], Sampling(max_new_tokens=4, cut_head_answers=True))[0]
    assert a.finish_reason == "length" and a.completion_tokens == 4
    first = ids_of(eng, Head().answer([1], None)[0])[:4]
    assert str(a) == eng.processor.tokenizer.decode(first).strip()  # stripped, as a decoded answer is


def test_structured_json_comes_back_whole(engine):
    a = diagnosis(engine, 3, json_schema=json.dumps(SCHEMA))
    v = json.loads(str(a))  # a cut JSON would not parse
    assert v["answer"].startswith("Diagnosis:") and a.finish_reason == "stop"
    msgs = [{"role": "user", "content": f"<image>\n{Q}"}]
    assert engine.count_usage(a, msgs, [wafer_map()])[1] == len(ids_of(engine, a)) + 1  # counted on demand


def test_ask_honours_max_new_tokens(tiny_wafer_head_dir, tmp_path, capsys):
    from domainvlm.cli import main

    wafer_map().save(tmp_path / "m.png")
    args = ["ask", "--model", str(tiny_wafer_head_dir), "--image", str(tmp_path / "m.png"), "--device", "cpu", Q]
    assert main([*args, "--max-new-tokens", "3"]) == 0
    cut = capsys.readouterr().out.strip()
    assert main(args) == 0
    full = capsys.readouterr().out.strip()
    assert full.startswith(cut) and len(full) > len(cut) and len(ids_of_dir(tiny_wafer_head_dir, cut)) <= 3


def ids_of_dir(model_dir, text):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))(text, add_special_tokens=False)["input_ids"]
