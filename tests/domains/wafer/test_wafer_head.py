"""The constrained wafer-diagnosis head: always parseable, language follows the question, free decoding else."""

from __future__ import annotations


import numpy as np
import pytest

from domainvlm.domains.wafer.knowledge import parse_diagnosis
from domainvlm.domains.wafer.patterns import mixedwm38_classes, set_name
from domainvlm.domains.wafer import head as wh
from domainvlm.domains.wafer import trie


@pytest.fixture(scope="module")
def engine(tiny_wafer_head_dir):
    """The untrained tiny compact model with the wafer head switched on in its config (tests/conftest.py)."""
    from domainvlm.inference.engine import Engine

    return Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)


def _maps(n, seed=0):
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    rng = np.random.default_rng(seed)
    return [render_map(synth_map((), 52, rng)) for _ in range(n)]


def test_language_and_intent_detection():
    assert wh.question_lang("这张晶圆图显示了什么缺陷模式？") == "zh"
    assert wh.question_lang("What defect pattern does this wafer map show?") == "en"
    assert wh.wants_diagnosis("Diagnose this wafer map.") and wh.wants_diagnosis("请诊断这张晶圆图。")
    assert wh.wants_diagnosis("What do you see?")
    assert not wh.wants_diagnosis("What is the capital of France?")
    assert not wh.wants_diagnosis("法国的首都是哪里？")
    from domainvlm.domains.wafer.instruct import QUESTIONS

    assert all(wh.wants_diagnosis(q) for lang in QUESTIONS for q in QUESTIONS[lang])  # eval questions: no probe


def test_trie_holds_exactly_the_38_lines_per_language(engine):
    tok = engine.processor.tokenizer
    for lang in ("en", "zh"):
        leaves, stack = [], [([], wh.build_trie(tok, lang))]
        while stack:
            path, node = stack.pop()
            if node.leaf is not None:
                leaves.append((node.leaf, tok.decode(path)))
            stack += [(path + [t], c) for t, c in node.children.items()]
        assert sorted(set_name(d) for d, _ in leaves) == sorted(mixedwm38_classes())
        for d, text in leaves:
            assert text.endswith("\n") and parse_diagnosis(text) == d


def test_answers_always_parse_in_the_question_language(engine):
    imgs = _maps(3)
    convs = []
    for q in ("What defect pattern does this wafer map show?", "这张晶圆图显示了什么缺陷模式？", "Diagnose this wafer map."):
        convs += [([{"role": "user", "content": f"<image>\n{q}"}], [im]) for im in imgs]
    answers = engine.generate(convs)
    for (msgs, _), a in zip(convs, answers):
        d = parse_diagnosis(a)
        assert d is not None, a
        zh = wh.question_lang(msgs[-1]["content"]) == "zh"
        assert a.startswith("诊断：" if zh else "Diagnosis:")
        from domainvlm.domains.wafer.knowledge import answer

        assert a == answer(d, "zh" if zh else "en", True)  # diagnosis line + the trained explanation


def test_batched_and_single_answers_agree(engine):
    imgs = _maps(4, seed=3)
    msgs = [{"role": "user", "content": "<image>\nWhich failure patterns are present on this wafer?"}]
    batched = engine.generate([(msgs, [im]) for im in imgs])
    assert batched == [engine.generate([(msgs, [im])])[0] for im in imgs]


def test_other_questions_fall_back_to_free_decoding(engine, monkeypatch):
    """The head answers the first question and leaves the rest to the engine (None), which decodes them: on a
    real base, whose LM chats (a compact model's later turns: test_later_turns_about_the_map_*)."""
    from domainvlm.inference.engine import Engine

    head = wh.head_for(engine)
    monkeypatch.setattr(head.model.config, "domainvlm", {"answer_head": "wafer"})  # no compact architecture
    seen = []
    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: seen.extend(convs) or ["FREE"] * len(convs))
    monkeypatch.setattr(wh.WaferHead, "prefers_diagnosis", lambda self, pv, g, prompts: [False] * len(prompts))
    img = _maps(1)[0]
    first = [{"role": "user", "content": "<image>\nDiagnose this wafer map."}]
    follow = first + [{"role": "assistant", "content": "Diagnosis: Normal"},
                      {"role": "user", "content": "What should I check first in the fab?"}]
    off_topic = [{"role": "user", "content": "<image>\nWhat is the capital of France?"}]
    # follow-ups and out-of-scope questions about a map were in the recipe's training data (follow_up_frac,
    # out_of_scope_frac), so the model answers them; a text-only turn was not: a compact model's head says what
    # it answers (test_wafer_no_image_head.py), a diagnosis request without a map abstains there
    no_image = [{"role": "user", "content": "What does yield mean?"}]
    convs = [(first, [img]), (follow, [img]), (off_topic, [img]), (no_image, [])]
    direct = head.answer(convs)
    assert parse_diagnosis(direct[0]) is not None and direct[1:3] == [None] * 2
    assert direct[3] is None  # a real base: its own chat for a text-only turn too
    out = engine.generate(convs)
    assert out[0] == direct[0] and out[1:] == ["FREE"] * 3 and len(seen) == 3


def test_free_decoding_really_runs_the_model(engine):
    from domainvlm.inference.engine import Sampling

    out = engine.generate([([{"role": "user", "content": "<image>\nWhat is the capital of France?"}], _maps(1))],
                          Sampling(max_new_tokens=3))
    assert isinstance(out[0], str)


def test_question_without_keyword_follows_the_models_own_choice(engine, monkeypatch):
    from domainvlm.inference.engine import Engine

    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    img = _maps(1)[0]
    conv = ([{"role": "user", "content": "<image>\nTell me about this."}], [img])
    monkeypatch.setattr(wh.WaferHead, "prefers_diagnosis", lambda self, pv, g, prompts: [True] * len(prompts))
    assert parse_diagnosis(engine.generate([conv])[0]) is not None
    monkeypatch.setattr(wh.WaferHead, "prefers_diagnosis", lambda self, pv, g, prompts: [False] * len(prompts))
    assert engine.generate([conv]) == ["FREE"]


def test_probe_compares_diagnosis_and_refusal_starts(engine):
    h = wh.head_for(engine)
    assert h.diag_first and h.refusal_first and not set(h.diag_first) & set(h.refusal_first)
    img = _maps(1)[0]
    prompts = [h.prompt_ids([{"role": "user", "content": "<image>\nTell me about this."}])]
    pv, g = h.pixel_values([img.resize((h.size, h.size))])
    assert h.prefers_diagnosis(pv, g, prompts) in ([True], [False])


def test_more_bias_is_the_threshold_for_naming_one_more_pattern(engine):
    """+huge: ' +' wins every decision that offers it; -huge: never (single patterns only); read from config."""
    tok = engine.processor.tokenizer
    head = wh.WaferHead(engine.model, engine.processor)
    assert head.more_bias == 0.0 and len(head.plus_ids) >= 1
    assert all(tok.decode([t]) in " + " for t in head.plus_ids)  # the start of the separator
    imgs = _maps(6, seed=5)
    pv, g = head.pixel_values(imgs)
    prompts = [head.prompt_ids([{"role": "user", "content": "<image>\nDiagnose this wafer map."}])] * len(imgs)
    found = {}
    for b in (1e4, -1e4):
        head.more_bias = b
        found[b] = head.diagnose(pv, g, prompts, ["en"] * len(imgs))
    root = wh.build_trie(tok, "en")
    for d in found[1e4]:
        node = root
        for t in trie.line_tokens(tok, d, "en"):
            plus = [p for p in head.plus_ids if p in node.children]
            if len(node.children) > 1 and plus:
                assert t in plus, d  # a line that stops where it could go on is impossible here
            node = node.children[t]
    assert all(len(d) <= 1 for d in found[-1e4])  # (the trained model's side: tests/test_bundled_model.py)
    dv = dict(engine.model.config.domainvlm)
    try:
        engine.model.config.domainvlm = {**dv, "diagnosis_more_bias": 0.7}
        assert wh.WaferHead(engine.model, engine.processor).more_bias == 0.7
    finally:
        engine.model.config.domainvlm = dv


def test_pixel_values_single_frames_of_any_mode_and_size(engine):
    """Grey, palette and RGBA inputs and other sizes are read as RGB at the head's size; one frame per patch."""
    import torch
    from PIL import Image

    from domainvlm.models.qwen_fast import patchify

    h = wh.head_for(engine)
    rgb = [im.convert("RGB").resize((h.size, h.size), Image.Resampling.NEAREST) for im in _maps(4, seed=2)]
    odd = [rgb[0].convert("L"), rgb[1].convert("P"), rgb[2].convert("RGBA"), rgb[3].resize((h.size + 9, h.size - 5))]
    pv, g = h.pixel_values(odd)
    want = [im.convert("RGB") for im in odd[:3]] + [odd[3].resize((h.size, h.size), Image.Resampling.NEAREST)]
    ref = patchify(torch.from_numpy(np.stack([np.asarray(im) for im in want])), **dict(h.ip, temporal=1))
    assert torch.equal(pv, ref) and pv.shape[1] == 3 * h.ip["patch"] ** 2
    assert g.tolist() == [[1, h.size // h.ip["patch"], h.size // h.ip["patch"]]] * 4


def test_later_turns_about_the_map_to_a_compact_model(engine, monkeypatch):
    """Its LM learnt one follow-up ("what should I check first?"): other later turns decoded freely were
    fragments ("Check, e."), a Chinese one got an English line. Diagnosis and fact questions are answered as if
    asked first, the rest with the trained follow-up from the map's diagnosis (and what the model answers)."""
    from domainvlm.domains.wafer.follow_up import NOTE
    from domainvlm.domains.wafer.instruct import follow_up_answer
    from domainvlm.inference.engine import Engine

    monkeypatch.setattr(Engine, "_decode", lambda self, convs, s, *a: ["FREE"] * len(convs))
    img = _maps(1)[0]
    first = [{"role": "user", "content": "<image>\nDiagnose this wafer map."}]
    said = engine.generate([(first, [img])])[0]

    def later(q):
        msgs = first + [{"role": "assistant", "content": str(said)}, {"role": "user", "content": q}]
        return engine.generate([(msgs, [img])])[0]

    def alone(q):
        return engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img])])[0]

    for q in ("这是什么缺陷？", "What is the yield?", "How many dies failed?"):
        assert later(q) == alone(q) != "FREE", q
    zh = later("这是什么？")
    assert zh.startswith("诊断：") and zh == alone("这是什么？")
    defects = tuple(alone("What defect pattern does this wafer map show?").assessment.labels)
    assert later("What should I check first in the fab?") == follow_up_answer(defects, "en", wh.head_for(engine).tax)
    assert later("Is it severe?") == f"{NOTE['en']}\n{follow_up_answer(defects, 'en', wh.head_for(engine).tax)}"
