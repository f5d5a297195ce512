"""Token-level distillation targets of the wafer recipe (domains/wafer/expert_kd.py), on the bundled tokenizer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from domainvlm.domains.wafer.expert_data import CLASSES, LANGS
from domainvlm.domains.wafer.expert_kd import (LineKD, dense_targets, kl_positions, line_table, slot_targets)
from domainvlm.domains.wafer.taxonomy import for_model_dir
from domainvlm.domains.wafer.trie import line_tokens

ASSET = Path(__file__).resolve().parents[3] / "src" / "domainvlm" / "assets" / "wafer-expert"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ASSET)


@pytest.fixture(scope="module")
def tax():
    return for_model_dir(None)


@pytest.fixture(scope="module")
def table(tok, tax):
    return line_table(tok, CLASSES, tax)


def _targets(table, lang: str, gold: str, q: dict):
    qv = torch.zeros(1, len(CLASSES))
    for name, p in q.items():
        qv[0, CLASSES.index(name)] = p
    li = torch.tensor([LANGS.index(lang)])
    _, j, tok, rep, mass = slot_targets(table, li, torch.tensor([CLASSES.index(gold)]), qv)
    return j, dense_targets(tok, mass, 5000), tok, rep, mass


def _line(tok, tax, name, lang):
    return line_tokens(tok, tax.canonical(name.split("+")), lang, tax)


@pytest.mark.parametrize("lang", LANGS)
def test_one_hot_teacher_gives_one_hot_targets_on_the_gold_line(tok, tax, table, lang):
    for gold in CLASSES:
        ids = _line(tok, tax, gold, lang)
        j, dense, *_ = _targets(table, lang, gold, {gold: 1.0})
        assert j.tolist() == list(range(len(ids)))  # every token of the line, its newline included
        assert torch.equal(dense.argmax(1), torch.tensor(ids))
        assert torch.allclose(dense.max(1).values, torch.ones(len(ids)))


@pytest.mark.parametrize("lang", LANGS)
def test_mass_splits_exactly_at_the_branching_token(tok, tax, table, lang):
    a, ab = _line(tok, tax, "Center", lang), _line(tok, tax, "Center+Loc", lang)
    br = next(i for i, (x, y) in enumerate(zip(a, ab)) if x != y)
    q = {"Center": 0.3, "Center+Loc": 0.7}
    _, dense, *_ = _targets(table, lang, "Center", q)
    assert len(dense) == len(a)
    for i in range(br):  # shared tokens: all the mass
        assert dense[i, a[i]] == pytest.approx(1.0)
    assert dense[br, a[br]] == pytest.approx(0.3) and dense[br, ab[br]] == pytest.approx(0.7)
    assert "\n" in tok.decode([a[br]])  # "Center" ends where "Center + Loc" goes on: the end token decides
    _, dense2, *_ = _targets(table, lang, "Center+Loc", q)
    assert torch.allclose(dense2[:br + 1], dense[:br + 1])  # same prefix, same conditional targets
    for i in range(br + 1, len(ab)):  # past the branch only Center+Loc is left among q's lines
        assert dense2[i, ab[i]] == pytest.approx(1.0)


def test_languages_have_their_own_lines(tok, tax, table):
    en, zh = _line(tok, tax, "Edge-Ring", "en"), _line(tok, tax, "Edge-Ring", "zh")
    assert en != zh
    for lang, ids in (("en", en), ("zh", zh)):
        _, dense, *_ = _targets(table, lang, "Edge-Ring", {"Edge-Ring": 1.0})
        assert dense.argmax(1).tolist() == ids


def test_three_way_split_sums_lines_that_share_the_next_token(tok, tax, table):
    # Center vs Center+Edge-Loc vs Center+Loc: at " +" the two mixtures pool their mass (0.5 + 0.2)
    q = {"Center": 0.3, "Center+Edge-Loc": 0.5, "Center+Loc": 0.2}
    a, el = _line(tok, tax, "Center", "en"), _line(tok, tax, "Center+Edge-Loc", "en")
    br = next(i for i, (x, y) in enumerate(zip(a, el)) if x != y)
    _, dense, *_ = _targets(table, "en", "Center+Loc", q)
    assert dense[br, el[br]] == pytest.approx(0.7) and dense[br, a[br]] == pytest.approx(0.3)
    assert torch.allclose(dense.sum(1), torch.ones(len(dense)))


@pytest.mark.parametrize("support", ["children", "vocab"])
def test_kl_is_zero_when_the_student_is_the_target_and_matches_a_dense_reference(table, support):
    torch.manual_seed(0)
    q = F.softmax(torch.randn(3, len(CLASSES)) * 2, -1)
    lang, gold = torch.tensor([0, 1, 0]), torch.tensor([CLASSES.index(c) for c in ("Center+Loc", "Donut", "Normal")])
    _, _, tok, rep, mass = slot_targets(table, lang, gold, q)
    v, T = 5000, 2.0
    dense = dense_targets(tok, mass, v)
    # a student whose tempered distribution is the target (children: over the trie children; vocab: everywhere)
    z_all = torch.where(dense > 0, dense.clamp_min(1e-30).log() * T, torch.full_like(dense, -1e4))
    z_child = z_all.gather(1, tok)
    kl = kl_positions(z_child, rep, mass, T, z_all if support == "vocab" else None)
    assert kl.abs().max() < 1e-4
    z_rand = torch.randn(len(tok), v) * 3  # any other student: the same KL as a dense reference computation
    ref_logp = F.log_softmax(z_rand / T, -1)
    if support == "children":
        children = torch.zeros(len(tok), v).scatter_add_(1, tok, rep.float()) > 0
        ref_logp = F.log_softmax((z_rand / T).masked_fill(~children, float("-inf")), -1)
    ref = (torch.xlogy(dense, dense) - dense * ref_logp.masked_fill(dense == 0, 0)).sum(1)
    got = kl_positions(z_rand.gather(1, tok), rep, mass, T, z_rand if support == "vocab" else None)
    assert torch.allclose(got, ref, atol=1e-4) and (got[ref > 1e-3] > 0).all()
    if support == "children":  # forced positions (one child) cost nothing
        assert torch.all(got[rep.sum(1) == 1].abs() < 1e-6)


def test_line_kd_on_templates_same_with_answer_only_logits(tok, tax):
    """kl_sum reads the line positions of each template; with answer-only logits (keep) it gives the same."""
    lines = [(c, lang) for c in ("Center", "Center+Loc", "Scratch") for lang in LANGS]
    ids = [line_tokens(tok, tax.canonical(c.split("+")), lang, tax) for c, lang in lines]
    n = 4 + max(map(len, ids))
    labels = torch.full((len(lines) + 1, n), -100)
    kind, cls, langs = [], [], []
    for i, ((c, lang), x) in enumerate(zip(lines, ids)):
        labels[i, 3:3 + len(x)] = torch.tensor(x)
        kind.append("diag" if i % 2 else "short"), cls.append(CLASSES.index(c)), langs.append(lang)
    labels[-1, 3:5] = 7  # an out-of-scope answer: not distilled
    kind.append("oos"), cls.append(-1), langs.append("en")
    tmpl = SimpleNamespace(kind=kind, cls=cls, lang=langs, labels=labels)
    kd = LineKD(tok, tmpl, CLASSES, tax, "cpu", 2.0)
    t = torch.tensor([0, 3, 6, 4, 1])
    assert int(kd.rows(t)) == 4
    torch.manual_seed(1)
    logits = torch.randn(len(t), n, 1500, requires_grad=True)
    q = F.softmax(torch.randn(len(t), len(CLASSES)), -1)
    full = kd.kl_sum(logits, None, t, q)
    keep = (labels[t][:, 1:] != -100).any(0).nonzero().flatten()  # as train/speed.step_loss keeps them
    assert torch.allclose(kd.kl_sum(logits[:, keep], keep, t, q), full)
    full.backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[0].abs().sum() > 0  # the oos row gets no gradient
    bad = SimpleNamespace(kind=["diag"], cls=[0], lang=["en"], labels=labels[1:2])  # another class's line
    with pytest.raises(RuntimeError, match="differ"):
        LineKD(tok, bad, CLASSES, tax, "cpu", 2.0)
