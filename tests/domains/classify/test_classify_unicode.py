"""Chinese (any non-ASCII UTF-8) class names end to end: folder names and a labels CSV saved by Excel as
"CSV UTF-8" (with a BOM) -> data build -> taxonomy.json -> records -> a head model's answers, eval and predict."""

import csv
import json
import warnings
from pathlib import Path

import pytest
from classify_helpers import image_folder

from domainvlm.cli import main

CLASSES = ("裂纹", "划痕", "Kratzer-ä")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("zh") / "钢板", per_class=2, classes=CLASSES)


def _records(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_folder_and_bom_csv_give_the_same_chinese_taxonomy_and_answers(photos, tmp_path):
    out = tmp_path / "from-folder"
    assert main(["data", "build", "--source", str(photos), "--out", str(out)]) == 0
    text = (out / "taxonomy.json").read_text(encoding="utf-8")
    assert "裂纹" in text and "\\u" not in text  # readable UTF-8, not escapes
    tax = json.loads(text)
    assert tax["name"] == "钢板" and sorted(c["name"] for c in tax["classes"]) == sorted(CLASSES)
    recs = _records(out / "train.jsonl") + _records(out / "val.jsonl")
    for r in recs:
        (label,) = r["labels"]["labels"]
        assert r["images"][0].endswith(".png") and f"/{label}/" in r["images"][0]
        prefix = "类别：" if r["meta"]["lang"] == "zh" else "Class: "
        assert r["messages"][1]["content"] == prefix + label
    assert {r["meta"]["lang"] for r in recs} == {"en", "zh"}

    rows = [("Filename", "Class", "Set")] + [(f"{photos.name}/{s}/{c}/{c}_{i}.png", c, s)
                                            for s in ("train", "val") for c in CLASSES for i in range(2)]
    lst = photos.parent / "标签.csv"
    lst.write_bytes(b"\xef\xbb\xbf" + "".join(";".join(r) + "\r\n" for r in rows).encode("utf-8"))
    out2 = tmp_path / "from-csv"
    assert main(["data", "build", "--source", str(lst), "--out", str(out2)]) == 0
    tax2 = json.loads((out2 / "taxonomy.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in tax2["classes"]] == [c["name"] for c in tax["classes"]]
    by_image = lambda path: {r["images"][0]: (r["labels"]["labels"], r["meta"]["split"])  # noqa: E731
                             for r in _records(path / "train.jsonl") + _records(path / "val.jsonl")}
    assert by_image(out2) == by_image(out) and len(by_image(out)) == 12


def test_a_head_model_answers_evaluates_and_predicts_in_chinese_classes(photos, tmp_path, capsys):
    from classify_helpers import tiny_head_model
    from matplotlib import font_manager

    from domainvlm.domains.classify.instruct import parse_answer
    from domainvlm.evaluate.plots import CJK_FONTS
    from domainvlm.taxonomy import load

    data = tmp_path / "data"
    assert main(["data", "build", "--source", str(photos), "--out", str(data)]) == 0
    tax = load(data / "taxonomy.json")
    model = tiny_head_model(tmp_path / "model", tax)

    m_out, preds = tmp_path / "m.json", tmp_path / "p.jsonl"
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["eval", "--model", str(model), "--data", str(photos), "--split", "val", "--out", str(m_out),
                     "--predictions", str(preds), "--quiet"]) == 0
    m = json.loads(m_out.read_text(encoding="utf-8"))
    assert m["n"] == 6 and m["unparsed"] == 0 and set(m["per_class"]) == set(CLASSES)
    assert Path(m["confusion_png"]).stat().st_size > 1000
    # the confusion PNG: a CJK font where one is installed, else one line saying so (not a warning per glyph)
    assert not [w for w in seen if "Glyph" in str(w.message)]
    have = {f.name for f in font_manager.fontManager.ttflist} & set(CJK_FONTS)
    assert capsys.readouterr().err.count("no font with CJK glyphs is installed") == (0 if have else 1)
    assert all(parse_answer(r["answer"], tax.names) for r in _records(preds))

    out = tmp_path / "answers.csv"
    assert main(["predict", str(photos / "val"), "-q", "这是什么类别？", "-o", str(out), "--model", str(model),
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["id"] for r in rows) == sorted(f"{c}/{c}_{i}.png" for c in CLASSES for i in range(2))
    for r in rows:
        assert r["answer"].startswith("类别：") and r["defects"] in CLASSES
        assert parse_answer(r["answer"], tax.names) == (r["defects"],)
        assert set(json.loads(r["per_pattern"])) == set(CLASSES)
