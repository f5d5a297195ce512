"""A fab's own taxonomy: the YAML extends a model's taxonomy.json; answers, parsing, metrics and the head's
answer lines follow the extended taxonomy; the 8 known patterns' answers stay as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from domainvlm.domains.wafer import knowledge as wk
from domainvlm.domains.wafer.taxonomy import default
from domainvlm.errors import UserError
from domainvlm.taxonomy import extend, load

ROOT = Path(__file__).resolve().parents[3]
YAML = ROOT / "configs" / "fab-patterns.yaml"
BUNDLED = ROOT / "src" / "domainvlm" / "assets" / "wafer-expert"
NEW = ("Reticle-Repeat", "Probe-Card", "Notch-Cluster")


@pytest.fixture(scope="module")
def tax():
    return extend(load(BUNDLED), YAML)


def test_extend_keeps_old_classes_and_adds_the_yaml(tax, tmp_path):
    base = load(BUNDLED)
    assert tax.names == base.names + list(NEW) and tax.none_label == "Normal" and tax.multi_label
    assert tax.answer_sets()[:len(base.answer_sets())] != base.answer_sets()  # singles grew by three ...
    assert set(base.answer_sets()) < set(tax.answer_sets()) and len(tax.answer_sets()) == 38 + 3 + 18
    assert tax.get("Notch-Cluster").zh == "缺口簇" and "notch" in tax.get("Notch-Cluster").describe("en")
    assert extend(tax, YAML).to_dict() == tax.to_dict()  # extending twice changes nothing
    tax.save(tmp_path)
    assert load(tmp_path).to_dict() == tax.to_dict()  # what the model folder carries


@pytest.mark.parametrize("text, msg", [
    ("classes: [X]\nmulti_label: false\n", "field 'multi_label' is False but the model's taxonomy has True"),
    ("classes: [X]\ncombinations: [[X, Nope]]\n", r"combinations\[0\]: unknown class 'Nope'"),
    ("classes: [A+B]\n", r"classes\[0\]: class name 'A\+B' may not contain '\+'"),
    ("classes: [X]\ncolour: red\n", "unknown field 'colour'"),
])
def test_extend_errors_name_the_file(tmp_path, text, msg):
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=f"mine.yaml: .*{msg}"):
        extend(default(), p)


def test_answers_with_new_classes_and_old_answers_unchanged(tax):
    for d in [(), ("Center",), ("Center", "Edge-Loc", "Loc", "Scratch")]:
        for lang in ("en", "zh"):
            assert wk.answer(d, lang, True, tax) == wk.answer(d, lang, True)
    en = wk.answer(("Reticle-Repeat", "Center"), "en", True, tax)
    assert en.startswith("Diagnosis: Center + Reticle-Repeat\n") and "periodic grid" in en
    zh = wk.answer(("Notch-Cluster",), "zh", True, tax)
    assert zh.startswith("诊断：缺口簇(Notch-Cluster)\n") and "缺口处" in zh
    for d in [("Probe-Card",), ("Scratch", "Probe-Card"), ()]:
        for lang in ("en", "zh"):
            assert wk.parse_diagnosis(wk.answer(d, lang, True, tax), tax) == tax.canonical(d)
    assert wk.parse_diagnosis("Diagnosis: Probe-Card") is None  # the default taxonomy does not know it
    from domainvlm.domains.wafer.instruct import follow_up_answer

    assert "probe-card needle" in follow_up_answer(("Probe-Card",), "en", tax)


def test_metrics_score_new_classes(tax):
    from domainvlm.domains.wafer.metrics import added_class_f1, wafer_metrics

    gold = [("Reticle-Repeat",), ("Center", "Probe-Card"), ("Notch-Cluster",), ()]
    pred = [("Reticle-Repeat",), ("Center",), ("Notch-Cluster",), ("Notch-Cluster",)]
    m = wafer_metrics(gold, pred, "custom", tax)
    assert m["exact_match"] == 0.5
    f1 = added_class_f1(m, tax)
    assert f1["new_class_f1_per_class"] == {"Reticle-Repeat": 1.0, "Probe-Card": 0.0, "Notch-Cluster": 0.6667}
    old = wafer_metrics([("Center",), ()], [("Center", "Reticle-Repeat"), ()], "wm811k", tax)
    assert old["exact_match"] == 0.5  # a new class on an old map is an error, not a crash


def test_head_answer_lines_of_the_extended_taxonomy(tax):
    from transformers import AutoTokenizer

    from domainvlm.domains.wafer.head import build_trie

    tok = AutoTokenizer.from_pretrained(BUNDLED)
    for lang in ("en", "zh"):
        leaves, stack = [], [build_trie(tok, lang, tax)]
        while stack:
            node = stack.pop()
            if node.leaf is not None:
                leaves.append(node.leaf)
            stack.extend(node.children.values())
        assert sorted(leaves) == sorted(tax.answer_sets())


def test_recipe_class_list_keeps_the_38_first(tax):
    from domainvlm.domains.wafer.expert_data import CLASSES, class_names

    names = class_names(tax)
    assert names[:38] == CLASSES and len(names) == 59 and "Center+Reticle-Repeat" in names
    assert class_names(default()) == CLASSES
