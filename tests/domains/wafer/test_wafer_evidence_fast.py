"""The evidence's fast path against its reference path, on the bundled expert (CPU): the answer's own vision
tokens reused (kept_tokens.py) and the lean one-forward LM target (evidence_lm.py) must give the reference
path's scores (its own vision forward, the HF LM twice) and the same masks, top dies and words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map_with_masks

Q = "What defect pattern does this wafer map show?"


@pytest.fixture(scope="module")
def head():
    from domainvlm.inference.engine import Engine

    return Engine(device="cpu", threads=2).answer_head


def _answer(head, img):
    with torch.inference_mode():  # as the engine calls its head: the kept tokens are inference tensors
        return head.answer([([{"role": "user", "content": f"<image>\n{Q}"}], [img])])[0]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("labels", [("Center",), ("Donut", "Scratch"), ("Edge-Loc", "Loc", "Edge-Ring")])
def test_tree_target_equals_the_hf_two_forward_target_and_its_gradient(head, lang, labels):
    from domainvlm.domains.wafer.evidence import Attributor
    from domainvlm.domains.wafer.evidence_lm import supported, tree_targets
    from domainvlm.domains.wafer.evidence_tokens import line_targets

    assert supported(head.model)
    att = Attributor(head)
    m, _ = synth_map_with_masks(("Center", "Scratch"), 52, np.random.default_rng(1))
    pv, g = head.pixel_values([render_map(m, size=head.size)])
    with torch.no_grad():
        img = att.vision(pv, tuple(g[0].tolist()))
    img2 = torch.cat([img, 0.5 * img])  # two path points: rows of different positions and images
    prompt, lines, w = att.targets(labels, lang)
    for x0, steps in ((img, 1), (img2, 2)):
        xa, xb = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        ref = line_targets(head, prompt, lines, w, xa, steps)
        got = tree_targets(head, prompt, lines, w, xb, steps)
        assert got.shape == ref.shape == (len(labels),)
        assert torch.allclose(got, ref, atol=1e-4), (got, ref)
        ga, gb = torch.autograd.grad(ref.sum(), xa)[0], torch.autograd.grad(got.sum(), xb)[0]
        assert ga.abs().max() > 0 and torch.allclose(ga, gb, atol=1e-6 + 1e-4 * ga.abs().max().item())


def test_evidence_after_the_answer_reuses_its_tokens_and_equals_the_reference(head):
    from domainvlm.domains.wafer.evidence import Attributor

    fast, ref = Attributor(head), Attributor(head, fast=False)
    assert head.kept is not None and fast.reuse and fast.lean and not (ref.reuse or ref.lean)
    rng = np.random.default_rng(5)
    for defects in (("Center",), ("Donut", "Scratch"), ("Edge-Ring",), ("Loc", "Edge-Loc")):
        m, _ = synth_map_with_masks(defects, 52, rng)
        img = render_map(m, size=head.size)
        _answer(head, img)
        hits = head.kept.hits
        _, a = fast.raw_scores(img, defects)
        assert head.kept.hits == hits + 1  # the answer's tokens were used: no vision forward of its own
        _, b = ref.raw_scores(img, defects)
        assert head.kept.hits == hits + 1  # the reference path does not look
        for p in defects:
            assert np.abs(b[p]).max() > 0 and (b[p][m != 2] == 0).all()
            np.testing.assert_allclose(a[p], b[p], atol=1e-5 * np.abs(b[p]).max())
        assert fast.evidence(img, defects)[0] == ref.evidence(img, defects)[0]  # masks, top dies, words


def test_a_map_not_answered_is_computed_not_looked_up(head):
    from domainvlm.domains.wafer.evidence import Attributor

    fast, ref = Attributor(head), Attributor(head, fast=False)
    m, _ = synth_map_with_masks(("Edge-Loc",), 52, np.random.default_rng(11))
    img = render_map(m, size=head.size)
    hits = head.kept.hits
    _, a = fast.raw_scores(img, ("Edge-Loc",))
    _, b = ref.raw_scores(img, ("Edge-Loc",))
    assert head.kept.hits == hits
    np.testing.assert_allclose(a["Edge-Loc"], b["Edge-Loc"], atol=1e-5 * np.abs(b["Edge-Loc"]).max())


def test_kept_tokens_keep_small_batches_only_and_match_exactly():
    from domainvlm.domains.wafer.kept_tokens import KeptTokens

    k = KeptTokens(keep=3)
    pv, tk = torch.arange(8.0).view(4, 2), torch.arange(12.0).view(4, 3)  # 2 maps of 2 patches
    k.put(pv, tk, per_image=2)
    assert torch.equal(k.get(pv[2:].clone()), tk[2:]) and k.hits == 1
    assert k.items[0][0].data_ptr() != pv.data_ptr()  # a batch's maps are copies, not views of the batch
    assert k.get(pv[2:] + 1) is None and k.get(pv[2:].double()) is None and k.hits == 1
    k.put(torch.zeros(8, 2), torch.zeros(8, 3), per_image=2)  # 4 maps > keep: nothing kept
    assert len(k.items) == 2
    for v in range(3):
        k.put(torch.full((2, 2), 100.0 + v), torch.full((2, 3), float(v)), per_image=2)
    assert len(k.items) == 3 and k.get(pv[:2]) is None  # the oldest went first
    assert torch.equal(k.get(torch.full((2, 2), 102.0)), torch.full((2, 3), 2.0))
