"""Taxonomy as data: YAML/JSON in, taxonomy.json in a model folder out, one-line errors naming the field."""

import pytest

from domainvlm import taxonomy
from domainvlm.errors import UserError


def _write(tmp_path, text, name="tax.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_yaml_round_trip_through_model_folder(tmp_path):
    p = _write(tmp_path, "name: steel\nclasses:\n  - {name: crazing, zh: 龟裂, description: {en: cracks, zh: 裂纹}}\n"
                         "  - scratches\n")
    t = taxonomy.load(p)
    assert t.names == ["crazing", "scratches"] and not t.multi_label
    assert t.get("crazing").display("zh") == "龟裂(crazing)" and t.get("scratches").display("zh") == "scratches"
    assert t.get("crazing").describe("zh") == "裂纹"
    t.save(tmp_path / "model")
    back = taxonomy.from_model_dir(tmp_path / "model")
    assert back.to_dict() == t.to_dict()
    assert taxonomy.from_model_dir(tmp_path) is None


def test_multi_label_answer_sets_and_canonical_order():
    t = taxonomy.from_dict({"name": "w", "multi_label": True, "none_label": "Normal",
                            "classes": ["A", "B", "C"], "combinations": [["A", "C"]]})
    assert t.answer_sets() == [(), ("A",), ("B",), ("C",), ("A", "C")]
    assert t.canonical(["C", "Normal", "A"]) == ("A", "C")
    with pytest.raises(ValueError, match="unknown class 'D'"):
        t.canonical(["D"])
    free = taxonomy.from_dict({"name": "w", "multi_label": True, "classes": ["A", "B"]})
    assert free.answer_sets() == [("A",), ("B",), ("A", "B")]


def test_all_fail_class_round_trips_and_survives_extension(tmp_path):
    t = taxonomy.from_dict({"name": "w", "multi_label": True, "none_label": "Normal", "classes": ["A", "Full"],
                            "all_fail": "Full"})
    t.save(tmp_path / "m")
    assert taxonomy.from_model_dir(tmp_path / "m").all_fail == "Full"
    ext = taxonomy.extend(t, _write(tmp_path, "name: w\nclasses: [New]\n"))
    assert ext.all_fail == "Full" and ext.names == ["A", "Full", "New"]
    with pytest.raises(UserError, match="field 'all_fail' is 'New'"):
        taxonomy.extend(t, _write(tmp_path, "name: w\nclasses: [New]\nall_fail: New\n", "t2.yaml"))


@pytest.mark.parametrize("text, msg", [
    ("name: x\nclasses: [a, a]\n", "classes[1]: duplicate class 'a'"),
    ("name: x\nclasses: []\n", "field 'classes' must list at least one class"),
    ("classes: [a]\n", "field 'name'"),
    ("name: x\nclasses: [a, {zh: 乙}]\n", "classes[1]: field 'name'"),
    ("name: x\nmulti_label: true\nclasses: [a, b]\ncombinations: [[a, c]]\n", "combinations[0]: unknown class 'c'"),
    ("name: x\nclasses: [a]\ncolour: red\n", "unknown field 'colour'"),
    ("name: x\nclasses: [a+b]\n", "may not contain '+'"),
    # a labels CSV cell 'a; b' or 'a|b' names two classes, so neither can be part of one name
    ("name: x\nclasses: ['a; b']\n", "classes[0]: class name 'a; b' may not contain ';'"),
    ("name: x\nclasses: [ok, 'a|b']\n", "classes[1]: class name 'a|b' may not contain '|'"),
    ("name: [x\n", "not valid YAML"),
    ("name: x\nclasses: [a]\nall_fail: b\n", "field 'all_fail': 'b' is not a class"),
])
def test_bad_taxonomy_is_one_line_naming_the_field(tmp_path, text, msg):
    p = _write(tmp_path, text)
    with pytest.raises(UserError) as e:
        taxonomy.load(p)
    assert msg in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_resolve_matches_hand_written_names_and_refuses_ambiguity():
    t = taxonomy.from_dict({"name": "w", "multi_label": True, "classes": [
        {"name": "Edge-Ring", "zh": "边缘环"}, {"name": "Edge_Loc"}, {"name": "EdgeLoc"}]})
    assert t.resolve("Edge-Ring") == "Edge-Ring"
    assert [t.resolve(x) for x in ("edge ring", "EDGE_RING", "边缘环", "边缘环(Edge-Ring)", "Ｅｄｇｅ－Ｒｉｎｇ")] == \
        ["Edge-Ring"] * 5
    assert t.resolve("Edge_Loc") == "Edge_Loc"  # exact names stay themselves
    assert t.resolve("edge loc") is None  # two classes match: no guess
    assert t.resolve("ring") is None


@pytest.mark.parametrize("text, names", [
    ("Center+Scratch", ["Center", "Scratch"]),
    (" Center; Scratch |Loc ", ["Center", "Scratch", "Loc"]),
    ("Edge-Ring", ["Edge-Ring"]),
    ("Center++", ["Center"]),
    ("", []),
    (None, []),
])
def test_split_label_splits_on_every_reserved_joiner(text, names):
    assert taxonomy.split_label(text) == names
    # every joiner a class name may not hold is one the splitter splits on, and no other character
    assert all(taxonomy.split_label(f"a{ch}b") == ["a", "b"] for ch in taxonomy.RESERVED)
    assert taxonomy.split_label("a-b_c d") == ["a-b_c d"]
