"""Confidence of the wafer head: every valid line scored from the diagnosis prefill, the greedy answer kept,
calibrated probabilities, low-confidence abstention, annotators, test-time augmentation."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from domainvlm.domains.wafer import head as wh
from domainvlm.domains.wafer import trie
from domainvlm.domains.wafer.knowledge import answer, parse_diagnosis
from domainvlm.inference.assessment import LOW_CONFIDENCE
from domainvlm.inference.confidence import Calibration

Q = "What defect pattern does this wafer map show?"
QZ = "这张晶圆图显示了什么缺陷模式？"


@pytest.fixture(scope="module")
def engine(tiny_wafer_head_dir):
    """The untrained tiny compact model with the wafer head switched on in its config (tests/conftest.py)."""
    from domainvlm.inference.engine import Engine

    return Engine(str(tiny_wafer_head_dir), device="cpu", threads=1)


def _maps(n, seed=0):
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    rng = np.random.default_rng(seed)
    pats = [(), ("Center",), ("Scratch",), ("Edge-Ring",), ("Loc",)]
    return [render_map(synth_map(pats[i % len(pats)], 52, rng)) for i in range(n)]


def _convs(imgs, q=Q):
    return [([{"role": "user", "content": f"<image>\n{q}"}], [im]) for im in imgs]


def _naive_logprob(head, img, prompt, lang, line):
    """log P(line | prompt + forced prefix) from one full forward over the whole sequence."""
    from domainvlm.models.qwen_fast import embed_with_images, mrope_positions

    f, _ = trie.forced(head.tries[lang])
    seq = prompt + f + line
    pv, g = head.pixel_values([img])
    ids = torch.tensor([seq])
    att = torch.ones_like(ids)
    pos, _ = mrope_positions(ids, head.image_token_id, g, head.ip["merge"], att)
    emb = embed_with_images(head.model, ids, head.vision(pv, tuple(g[0].tolist())))
    lp = torch.log_softmax(head.model(inputs_embeds=emb, attention_mask=att, position_ids=pos).logits[0].float(), -1)
    start = len(prompt) + len(f)
    return sum(lp[start + i - 1, t].item() for i, t in enumerate(line))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_line_scored_as_the_model_would(engine, lang):
    from domainvlm.domains.wafer.confidence import line_logprobs

    head = engine.answer_head
    imgs = _maps(3)
    prompt = head.prompt_ids([{"role": "user", "content": f"<image>\n{Q if lang == 'en' else QZ}"}])
    pv, g = head.pixel_values(imgs)
    state = {}
    found = head.diagnose(pv, g, [prompt] * 3, [lang] * 3, state=state)
    assert found == head.diagnose(pv, g, [prompt] * 3, [lang] * 3)  # keeping the prefill changes nothing
    lp = line_logprobs(head, state, [lang] * 3)
    assert lp.shape == (3, 38) and torch.isfinite(lp).all()
    n = len(trie.forced(head.tries[lang])[0])
    for b in (0, 2):
        for k in (0, 9, 37):  # a single pattern, a pair, a four-pattern mixture
            line = trie.line_tokens(head.tok, head.lines.sets[k], lang, head.tax)[n:]
            assert lp[b, k].item() == pytest.approx(_naive_logprob(head, imgs[b], prompt, lang, line), abs=2e-3)


def test_confidence_keeps_the_greedy_answer_and_sums_to_one(engine):
    head = engine.answer_head
    imgs = _maps(5)
    convs = _convs(imgs) + _convs(imgs, QZ)
    plain = engine.generate(convs)
    head.confidence = True
    try:
        scored = engine.generate(convs)
        got = head.assess(convs)
    finally:
        head.confidence = None
    for p, s, a in zip(plain, scored, got):
        assert parse_diagnosis(s) == parse_diagnosis(p) == a.labels  # the walk's answer, not the argmax
        assert a.lines is not None and len(a.line_logprobs) == 38
        probs = torch.softmax(torch.tensor(a.line_logprobs), -1)
        assert a.confidence == pytest.approx(probs[a.lines.index(a.labels)].item(), abs=1e-5)
        for name, v in a.per_label.items():  # marginal = sum over the lines naming the pattern
            assert v == pytest.approx(sum(p_ for p_, s_ in zip(probs.tolist(), a.lines) if name in s_), abs=1e-5)
        assert s.assessment is not None and s.assessment.labels == a.labels
        assert s.endswith(f"{a.confidence:.1%}.") or s.endswith(f"{a.confidence:.1%}。")
    assert plain[0].assessment is not None and plain[0].assessment.confidence is None  # uncalibrated: not scored
    assert str(plain[0]) == answer(plain[0].assessment.labels, "en", True)  # and the text exactly as before
    assert head.stats["scored"] >= 10 and 0 <= head.stats["argmax_differs"] <= head.stats["scored"]


def test_temperature_and_threshold_from_the_calibration(engine):
    head = engine.answer_head
    convs = _convs(_maps(4))
    head.confidence = True
    try:
        base = head.assess(convs)
        head.calibration = Calibration(temperature=5.0, threshold=0.99, info={"n": 1})
        hot = head.assess(convs)
        texts = engine.generate(convs)
    finally:
        head.calibration, head.confidence = Calibration(), None
    for a, h, t in zip(base, hot, texts):
        assert h.labels == a.labels
        assert h.abstain and h.reason == LOW_CONFIDENCE  # a flat distribution over 38 lines: far below 0.99
        z = torch.tensor(a.line_logprobs) / 5.0
        assert h.confidence == pytest.approx(torch.softmax(z, -1)[a.lines.index(a.labels)].item(), abs=1e-5)
        first, second = t.split("\n")[:2]
        assert parse_diagnosis(first) == a.labels and second.startswith("Uncertain: my confidence")  # guess kept


def test_annotators_see_the_canonical_map_and_the_language(engine):
    head = engine.answer_head
    seen = []

    def note(a, image, lang):
        seen.append((image.size, lang))
        a.facts["dies"] = 1
        a.notes.append("note-" + lang)

    head.annotators.append(note)
    try:
        got = engine.generate(_convs(_maps(2)) + _convs(_maps(1), QZ))
    finally:
        head.annotators.remove(note)
    assert seen == [((head.size, head.size), "en")] * 2 + [((head.size, head.size), "zh")]
    assert all(a.assessment.facts == {"dies": 1} for a in got)
    assert got[0].endswith("note-en") and got[2].endswith("note-zh")


def test_tta_averages_the_eight_views(engine):
    from domainvlm.domains.wafer.canvas import canonical_image, dihedral
    from domainvlm.domains.wafer.confidence import tta_logprobs

    head = engine.answer_head
    img = canonical_image(_maps(1, seed=3)[0], head.size)
    prompt = head.prompt_ids(_convs([img])[0][0])
    lp = tta_logprobs(head, [img], [prompt], ["en"])
    views = [dihedral(img, k) for k in range(8)]
    head.confidence = True
    try:
        each = [torch.tensor(a.line_logprobs) for a in head.assess(_convs(views))]
        head.tta = True
        a = head.assess(_convs([img]))[0]
    finally:
        head.tta, head.confidence = False, None
    mean = torch.stack([torch.softmax(e, -1) for e in each]).mean(0)
    assert torch.allclose(lp[0].exp(), mean, atol=1e-4)
    assert a.labels == a.lines[int(mean.argmax())]  # with tta the answer is the best line of the mean


def test_tta_of_die_grids_averages_their_eight_rotated_grids(engine):
    """eval's die grids (MapCanvas) are turned as grids, then drawn: the mean of the 8 turned maps' line
    distributions, each drawn as a picture."""
    from domainvlm.domains.wafer.batch_load import MapCanvas
    from domainvlm.domains.wafer.canvas import dihedral
    from domainvlm.domains.wafer.confidence import tta_logprobs
    from domainvlm.domains.wafer.render import render_map

    head = engine.answer_head
    from domainvlm.domains.wafer.synth import synth_map

    grid = synth_map(("Scratch",), 52, np.random.default_rng(4))
    prompt = head.prompt_ids(_convs([render_map(grid, size=head.size)])[0][0])
    lp = tta_logprobs(head, [MapCanvas(grid, head.size)], [prompt], ["en"])
    head.confidence = True
    try:
        views = [render_map(np.ascontiguousarray(dihedral(grid, k)), size=head.size) for k in range(8)]
        each = [torch.tensor(a.line_logprobs) for a in head.assess(_convs(views))]
    finally:
        head.confidence = None
    mean = torch.stack([torch.softmax(e, -1) for e in each]).mean(0)
    assert torch.allclose(lp[0].exp(), mean, atol=1e-4)
