"""The wafer taxonomy is data (taxonomy.json): the bundled model carries it, and the head, the answer wording
and the metrics read it."""

from __future__ import annotations

import itertools
import json
import shutil

from domainvlm import taxonomy
from domainvlm.domains.wafer import head as wh
from domainvlm.domains.wafer import knowledge as wk
from domainvlm.domains.wafer.metrics import wafer_metrics
from domainvlm.domains.wafer.patterns import NORMAL, PATTERNS, canonical_set, mixedwm38_classes, set_name
from domainvlm.domains.wafer.taxonomy import DEFAULT, default, for_model_dir
from domainvlm.models.loader import BUNDLED


def _published_38() -> list[str]:
    """MixedWM38's classes as the dataset paper lists them: Normal, 8 singles, 13 doubles, 12 triples, 4 quads
    (Near-full and Random only alone; Center/Donut and Edge-Loc/Edge-Ring never together)."""
    mixable = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Scratch")
    excl = [{"Center", "Donut"}, {"Edge-Loc", "Edge-Ring"}]
    combos = [canonical_set(c) for k in (2, 3, 4) for c in itertools.combinations(mixable, k)
              if not any(e <= set(c) for e in excl)]
    return [NORMAL] + list(PATTERNS) + [set_name(c) for c in combos]


def test_default_taxonomy_is_the_38_mixedwm38_classes():
    t = default()
    assert t.names == list(PATTERNS) and t.multi_label and t.none_label == NORMAL
    assert len(t.combinations) == 29 and len(t.answer_sets()) == 38
    assert mixedwm38_classes() == _published_38()
    assert all(c.zh and c.describe("en") and c.describe("zh") for c in t.classes)


def test_bundled_model_folder_carries_the_same_taxonomy():
    assert json.loads((BUNDLED / taxonomy.FILE_NAME).read_text(encoding="utf-8")) == json.loads(
        DEFAULT.read_text(encoding="utf-8"))
    assert for_model_dir(BUNDLED).to_dict() == default().to_dict()


def test_answer_wording_reads_names_and_descriptions_from_the_taxonomy():
    t = default()
    d = json.loads(DEFAULT.read_text(encoding="utf-8"))
    d["classes"][0]["zh"], d["classes"][0]["description"]["en"] = "中央", "dies fail in the middle"
    other = taxonomy.from_dict(d)
    assert wk.answer(("Center",), "en", True, t) == wk.answer(("Center",), "en", True)  # default == bundled
    assert wk.format_diagnosis(("Center", "Loc"), "zh", other) == "诊断：中央(Center) + 局部(Loc)"
    assert wk.explain(("Center",), "en", other).startswith("- Center: dies fail in the middle; typical causes:")


def test_head_answers_over_the_model_folders_taxonomy(tiny_model_dir, tmp_path):
    """A model folder whose taxonomy allows no mixtures: the head's trie holds the 9 single-answer lines only."""
    from domainvlm.models.loader import load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    d = default().to_dict()
    d["combinations"] = []
    (folder / taxonomy.FILE_NAME).write_text(json.dumps(d), encoding="utf-8")
    model, proc = load_model(folder, device="cpu")
    head = wh.make_head(model, proc, folder)
    for lang in ("en", "zh"):
        leaves, stack = [], [wh.build_trie(proc.tokenizer, lang, head.tax)]
        while stack:
            node = stack.pop()
            leaves += [node.leaf] if node.leaf is not None else []
            stack += list(node.children.values())
        assert sorted(leaves) == sorted([()] + [(p,) for p in PATTERNS])
    assert head.plus_ids == []  # no mixture: no "one more pattern" decision
    assert len(wh.make_head(model, proc, None).tax.answer_sets()) == 38  # no taxonomy.json: the default


def test_metrics_take_their_classes_from_the_taxonomy():
    d = default().to_dict()
    d["combinations"] = []
    singles = taxonomy.from_dict(d)
    gold, pred = [(), ("Center",), ("Loc",)], [(), ("Center",), ("Center", "Loc")]
    m = wafer_metrics(gold, pred, tax=singles)
    assert m["confusion"]["rows"] == [NORMAL] + list(PATTERNS)
    assert m["normal_label"] == NORMAL and set(m["per_pattern"]) == set(PATTERNS)
    assert m["confusion"]["matrix"][PATTERNS.index("Loc") + 1][-2] == 1  # a mixture it does not allow: (other)
    full = wafer_metrics(gold, pred)
    assert len(full["confusion"]["rows"]) == 38 and full["exact_match"] == m["exact_match"] == 2 / 3
