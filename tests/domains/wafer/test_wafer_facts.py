"""Map facts without a model: the die grid read back from a canvas, the synthetic generator's pattern masks,
the facts and their wording, the fact-question router and the per-map instruction pairs."""

from __future__ import annotations

import numpy as np
import pytest

from domainvlm.domains.wafer.dies import geometry, read_dies
from domainvlm.domains.wafer.evidence_words import describe
from domainvlm.domains.wafer.facts import map_facts, say
from domainvlm.domains.wafer.questions import fact_pairs, fact_question
from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map, synth_map_with_masks


@pytest.mark.parametrize("size", [26, 38, 52, 101, 212])
def test_die_grid_read_back_from_canvas_and_unpadded_png_is_the_map(size):
    m = synth_map(("Scratch", "Loc"), size, np.random.default_rng(size))
    for drawn in (render_map(m, size=224), render_map(m)):
        d = read_dies(drawn)
        assert d.grid.shape == m.shape and (d.grid == m).all()
    d = read_dies(render_map(m, size=224))
    ones = np.ones((224, 224))
    assert (d.per_die(ones) == d.k * d.k).all()  # every die's block lies inside the canvas


def test_masks_do_not_change_the_map_and_cover_the_pattern_dies():
    for seed in range(4):
        a = synth_map(("Center", "Edge-Loc", "Scratch"), 52, np.random.default_rng(seed))
        b, masks = synth_map_with_masks(("Center", "Edge-Loc", "Scratch"), 52, np.random.default_rng(seed))
        assert a.tobytes() == b.tobytes()
        assert set(masks) == {"Center", "Edge-Loc", "Scratch"}
        for mk in masks.values():
            assert mk.any() and (b[mk] == 2).all()  # a pattern's dies fail


def _disc(n: int = 11) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    return (np.hypot(yy, xx) <= n / 2).astype(np.uint8)


def test_facts_count_dies_yield_and_zones():
    m = _disc()
    n = int(m.sum())
    m[5, 5] = 2  # the centre die
    m[0, 3:8] = 2  # five dies of the top edge
    f = map_facts(m)
    assert (f["dies"], f["failing"], f["passing"]) == (n, 6, n - 6)
    assert f["yield_pct"] == round(100 * (n - 6) / n, 2)
    assert sum(z["dies"] for z in f["zones"].values()) == n
    assert sum(z["failing"] for z in f["zones"].values()) == 6
    assert f["zones"]["centre"]["failing"] == 1 and f["zones"]["edge"]["failing"] == 5
    assert f["worst_quadrant"] in ("top-right", "top-left")
    assert sum(q["dies"] for q in f["quadrants"].values()) == n
    y = f"{100 * (n - 6) / n:.1f}%"
    assert y in say(f, "yield") and y in say(f, "yield", "zh")
    assert say(f, "failing").startswith("6 dies fail") and "6颗" in say(f, "failing", "zh")


def test_clock_hours_as_drawn():
    g = geometry(_disc())
    assert g["hour"][0, 5] == 12 and g["hour"][5, 10] == 3 and g["hour"][10, 5] == 6 and g["hour"][5, 0] == 9
    assert g["zone"][5, 5] == 0 and g["zone"][0, 5] == 2


def test_words_say_where_a_mask_lies():
    m, masks = synth_map_with_masks(("Center",), 52, np.random.default_rng(1))
    assert describe("Center", masks["Center"], m)["extent"] == "centre"
    m, masks = synth_map_with_masks(("Edge-Ring",), 52, np.random.default_rng(1))
    w = describe("Edge-Ring", masks["Edge-Ring"], m)
    assert (w["extent"], w["radius_band"]) == ("ring", "edge") and "边缘区" in w["text"]["zh"]
    line = np.zeros((52, 52), bool)
    line[26, 30:51] = True  # from the 3 o'clock edge towards the centre
    grid = synth_map((), 52, np.random.default_rng(0))
    w = describe("Scratch", line & (grid > 0), grid)
    assert w["extent"] == "line" and w["clock"] == 3
    assert "3 o'clock edge" in w["text"]["en"] and "划痕" in w["text"]["zh"]


@pytest.mark.parametrize("q,kind", [
    ("What is the yield?", ("yield", None)), ("How many dies failed?", ("failing", None)),
    ("How many dies does this wafer have?", ("dies", None)), ("Where is the scratch?", ("where", "Scratch")),
    ("where is the edge loc located?", ("where", "Edge-Loc")), ("良率是多少？", ("yield", None)),
    ("有多少颗芯片失效？", ("failing", None)), ("边缘局部在什么位置？", ("where", "Edge-Loc")),
    ("What defect pattern does this wafer map show?", None), ("这张晶圆图显示了什么缺陷模式？", None),
    ("Which failure patterns are present on this wafer?", None), ("What should I check first in the fab?", None),
])
def test_fact_questions_are_told_from_diagnosis_questions(q, kind):
    assert fact_question(q) == kind


def test_instruction_pairs_carry_each_maps_own_numbers():
    pairs = {}
    for seed in (0, 1):
        m, masks = synth_map_with_masks(("Scratch",), 52, np.random.default_rng(seed))
        ev = [{"pattern": p, **describe(p, mk, m)} for p, mk in masks.items()]
        for lang in ("en", "zh"):
            got = fact_pairs(m, lang, ev)
            assert len(got) == 6 and all(q and a for q, a in got)
            pairs[seed, lang] = got
        y = 100 * (m == 1).sum() / (m > 0).sum()
        assert f"{y:.1f}%" in pairs[seed, "en"][0][1]
    assert pairs[0, "en"][0][1] != pairs[1, "en"][0][1]  # not fixed text


def test_facts_annotator_fills_the_structured_answer():
    from domainvlm.domains.wafer.facts import annotate
    from domainvlm.inference.assessment import OUT_OF_DOMAIN, Assessment

    m = synth_map(("Center",), 52, np.random.default_rng(0))
    a = Assessment(labels=("Center",), confidence=0.9)
    annotate(a, render_map(m, size=224), "en")
    assert a.facts["dies"] == int((m > 0).sum()) and a.facts["failing"] == int((m == 2).sum())
    assert a.to_json()["facts"]["yield_pct"] == a.facts["yield_pct"]
    b = Assessment(labels=(), confidence=0.1, abstain=True, reason=OUT_OF_DOMAIN)
    annotate(b, render_map(m, size=224), "en")
    assert b.facts == {}
