"""The fact-question router reads a question for its parts (QA of 2026-12-06: "How many dies passed?" got the
total die count, "did not fail" the failing count, "what defect pattern is causing the yield loss?" the yield),
and the worded answers for a zone / quadrant and for parts level with each other."""

from __future__ import annotations

import numpy as np
import pytest

from domainvlm.domains.wafer.facts import map_facts, say
from domainvlm.domains.wafer.questions import fact_question


@pytest.mark.parametrize("q,want", [
    ("How many dies passed?", ("passing", None)), ("How many dies did not fail?", ("passing", None)),
    ("How many good dies are there?", ("passing", None)), ("How many dies fail?", ("failing", None)),
    ("How many dies are not good?", ("failing", None)), ("How many dies are on the wafer?", ("dies", None)),
    ("What is the yield?", ("yield", None)), ("What is the failure rate?", ("fail_rate", None)),
    ("What percentage of dies fail at the edge?", ("fail_rate", "edge")),
    ("How many dies fail in the centre?", ("failing", "centre")),
    ("What is the yield in the top-left quadrant?", ("yield", "top-left")),
    ("Which zone has the most failing dies, the centre or the edge?", ("zone", None)),
    ("Which quadrant fails most?", ("quadrant", None)),
    ("How many dies failed in the center and at the edge?", ("zone", None)),
    ("Where is the scratch?", ("where", "Scratch")), ("Which zone is the scratch in?", ("where", "Scratch")),
    ("Where is the center pattern?", ("where", "Center")),
    ("良率是多少？", ("yield", None)), ("有多少颗芯片失效？", ("failing", None)),
    ("有多少颗合格芯片？", ("passing", None)), ("有多少颗芯片没有失效？", ("passing", None)),
    ("哪个象限失效最多？", ("quadrant", None)), ("边缘区域的失效率是多少？", ("fail_rate", "edge")),
    ("划痕在哪里？", ("where", "Scratch")),
])
def test_fact_questions_are_routed_by_their_parts(q, want):
    assert fact_question(q) == want


@pytest.mark.parametrize("q", ["What defect pattern is causing the yield loss?", "What limits the yield?",
                               "What defect is this?", "Describe the map.", "这是什么缺陷？", "导致良率低的原因是什么？"])
def test_pattern_or_cause_questions_go_to_the_diagnosis(q):
    assert fact_question(q) is None


def _centre_blob():
    yy, xx = np.mgrid[:30, :30]
    r2 = (yy - 14.5) ** 2 + (xx - 14.5) ** 2
    g = np.where(r2 > 225, 0, 1)
    g[r2 < 16] = 2  # a centred, symmetric failing blob
    return map_facts(g)


def test_counts_of_a_part_are_that_parts_own():
    f = _centre_blob()
    c = f["zones"]["centre"]
    assert say(f, "failing", "en", "centre").startswith(f"{c['failing']} dies fail in the centre zone")
    e = f["zones"]["edge"]
    assert f"0 of {e['dies']} dies fail" in say(f, "fail_rate", "en", "edge")
    passing = f["dies"] - f["failing"]
    assert say(f, "passing", "en").startswith(f"{passing} dies pass")
    assert say(f, "passing", "zh").startswith(f"共有{passing}颗合格芯片")


def test_level_quadrants_are_named_level_not_one_highest():
    f = _centre_blob()  # the four quadrants share the blob equally
    en, zh = say(f, "quadrant", "en"), say(f, "quadrant", "zh")
    assert en.startswith("All four quadrants are level") and "highest" not in en
    assert zh.startswith("各象限失效比例持平")
    # the centre zone alone fails: named as the highest, as before
    assert say(f, "zone", "en").startswith("The centre zone has the highest failing share")
