"""A fab's own classes keep their Chinese names in the computed fact answers: the zh 'not seen' sentence of a
'where is X?' question and the zh fact-question instruction pairs use the taxonomy's zh names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from domainvlm.domains.wafer.evidence_words import describe
from domainvlm.domains.wafer.facts import map_facts, say
from domainvlm.domains.wafer.questions import fact_pairs
from domainvlm.domains.wafer.synth import synth_map_with_masks
from domainvlm.domains.wafer.taxonomy import default
from domainvlm.taxonomy import extend

YAML = Path(__file__).resolve().parents[3] / "configs" / "fab-patterns.yaml"


def _fab_map(seed: int = 0):
    m, masks = synth_map_with_masks(("Center", "Probe-Card"), 52, np.random.default_rng(seed))
    return m, masks


def test_not_seen_sentence_names_a_fab_class_in_chinese():
    tax = extend(default(), YAML)
    m, _ = _fab_map()
    facts = map_facts(m, [])  # no evidence: the head does not see the pattern
    zh = say(facts, "where", "zh", "Reticle-Repeat", ("Center", "Probe-Card"), tax)
    assert zh == "这张图上没有看到光罩重复（诊断：中心(Center) + 探针卡行列(Probe-Card)）。", zh
    assert say(facts, "where", "zh", "Notch-Cluster", (), tax) == "这张图上没有看到缺口簇（诊断：正常）。"
    en = say(facts, "where", "en", "Reticle-Repeat", ("Center", "Probe-Card"), tax)
    assert en == "No Reticle-Repeat is seen on this map (diagnosis: Center + Probe-Card)."


def test_fact_pairs_ask_about_a_fab_class_by_its_chinese_name():
    tax = extend(default(), YAML)
    m, masks = _fab_map(1)
    ev = [{"pattern": p, **describe(p, mk, m, tax.get(p).zh)} for p, mk in masks.items()]
    pairs = fact_pairs(m, "zh", ev, tax=tax)
    where = {q: a for q, a in pairs[5:]}
    assert len(where) == 2
    qs = sorted(where)
    assert any(q.startswith("探针卡行列") for q in qs) and any(q.startswith("中心") for q in qs), qs
    assert all("Probe-Card" not in q for q in qs)
    assert any(a.startswith("探针卡行列：") for a in where.values()), where
    en = fact_pairs(m, "en", ev, tax=tax)
    assert any(q.startswith("Where is the Probe-Card") for q, _ in en[5:]), en
