"""A fab's own classes end to end: map files (G85 XML, STDF, KLARF written by independent writers) + a labels
CSV naming classes of configs/fab-patterns.yaml -> `data build --taxonomy` -> records -> `eval` with a model
whose taxonomy.json has the classes -> `predict FOLDER --lot-report` read back in that taxonomy."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import mapfile_writers as W
from domainvlm.cli import main
from domainvlm.domains.wafer.knowledge import parse_diagnosis
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.domains.wafer.taxonomy import default
from domainvlm.taxonomy import extend, load

ROOT = Path(__file__).resolve().parents[3]
YAML = ROOT / "configs" / "fab-patterns.yaml"
Q = "What defect pattern does this wafer map show?"
LABELS = ["Reticle-Repeat", "Center+Probe-Card", "Notch-Cluster", "Normal"]
GOLD = [["Reticle-Repeat"], ["Center", "Probe-Card"], ["Notch-Cluster"], []]


@pytest.fixture
def lot(tmp_path):
    rng = np.random.default_rng(5)
    g = [synth_map(tuple(x.split("+")) if x != "Normal" else (), 52, rng) for x in LABELS]
    d = tmp_path / "lot"
    d.mkdir()
    (d / "wafers_1_2.xml").write_text(W.g85_xml(g[:2]))
    (d / "wafer_3.stdf").write_bytes(W.stdf_bytes(g[2:3]))
    (d / "wafer_4.klarf").write_text(W.klarf18(g[3:]))
    refs = ["wafers_1_2.xml#0", "wafers_1_2.xml#1", "wafer_3.stdf", "wafer_4.klarf#0"]
    (d / "labels.csv").write_text("image,labels,split\n" + "".join(f"{r},{lab},val\n" for r, lab in zip(refs, LABELS)))
    return d, g


def test_data_build_with_own_taxonomy_names_the_new_classes(lot, tmp_path):
    d, _ = lot
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--taxonomy", str(YAML), "--out", str(out),
                 "--langs", "en,zh", "--seed", "1"]) == 0
    recs = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [r["labels"]["defects"] for r in recs] == GOLD
    assert {r["labels"]["taxonomy"] for r in recs} == {"custom"}
    tax = extend(default(), YAML)
    for r, gold in zip(recs, GOLD):
        ans = r["messages"][1]["content"]
        assert parse_diagnosis(ans, tax) == tuple(gold)
        for c in gold:  # each class named with its own look from the YAML, in the record's language
            assert tax.get(c).describe(r["meta"]["lang"]) in ans
    assert any(r["meta"]["lang"] == "zh" for r in recs) and any(r["meta"]["lang"] == "en" for r in recs)
    # the taxonomy the records were built with lies beside them, for train-expert taxonomy= / eval --taxonomy
    assert load(out / "taxonomy.json").to_dict() == tax.to_dict()
    # a model folder is a taxonomy too (its taxonomy.json as it is): the same records
    model = tmp_path / "m"
    model.mkdir()
    tax.save(model)
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--taxonomy", str(model), "--out",
                 str(tmp_path / "data2"), "--langs", "en,zh", "--seed", "1"]) == 0
    assert (tmp_path / "data2" / "val.jsonl").read_text() == (out / "val.jsonl").read_text()


@pytest.mark.parametrize("tax_arg,match", [
    (None, r"labels\.csv:2: field 'labels': unknown wafer pattern 'Reticle-Repeat' "
           r"\(a class of your own: .*--taxonomy"),
    ("yaml", r"labels\.csv:3: field 'labels': unknown wafer pattern 'Probe-Kard' in neither the 8 known patterns "
             r"nor .*fab-patterns\.yaml; known: Center, .*Notch-Cluster")])
def test_data_build_class_in_neither_taxonomy_one_line_nothing_written(lot, tmp_path, one_error_line, tax_arg, match):
    d, _ = lot
    text = (d / "labels.csv").read_text()
    if tax_arg:
        text = text.replace("Center+Probe-Card", "Center+Probe-Kard")
    (d / "labels.csv").write_text(text)
    out = tmp_path / "data"
    argv = ["data", "build", "--source", str(d / "labels.csv"), "--out", str(out)]
    assert main(argv + (["--taxonomy", str(YAML)] if tax_arg else [])) == 2
    assert re.search(match, one_error_line())
    assert not out.exists() or not any(out.iterdir())


def _gold_vs_predictions(pred_path, tax) -> float:
    rows = [json.loads(x) for x in Path(pred_path).read_text().splitlines()]
    parsed = [parse_diagnosis(r["answer"], tax) for r in rows]
    assert all(p is not None for p in parsed)
    return sum(p == tuple(g) for p, g in zip(parsed, GOLD)) / len(GOLD)


def test_eval_counts_new_classes_in_the_models_taxonomy(lot, fab_model, tmp_path, capsys):
    d, _ = lot
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--taxonomy", str(YAML), "--out", str(out),
                 "--langs", "en"]) == 0
    m_path, p_path = tmp_path / "m.json", tmp_path / "p.jsonl"
    assert main(["eval", "--model", str(fab_model), "--data", str(out / "val.jsonl"), "--out", str(m_path),
                 "--predictions", str(p_path), "--quiet", "--facts-limit", "0"]) == 0
    m = json.loads(m_path.read_text())
    assert m["n"] == 4 and m["unparsed"] == 0  # every answer parsed in the model's taxonomy
    assert {c: m["per_pattern"][c]["support"] for c in ("Reticle-Repeat", "Probe-Card", "Notch-Cluster")} == \
        {"Reticle-Repeat": 1, "Probe-Card": 1, "Notch-Cluster": 1}
    assert "Center+Probe-Card" in m["per_class"] and "Center+Probe-Card" in m["confusion"]["rows"]
    assert m["exact_match"] == _gold_vs_predictions(p_path, load(fab_model))
    # the labels CSV itself: read in the model's own taxonomy (no --taxonomy needed), the same numbers
    assert main(["eval", "--model", str(fab_model), "--data", str(d / "labels.csv"), "--lang", "en",
                 "--out", str(tmp_path / "m2.json"), "--quiet", "--facts-limit", "0"]) == 0
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert (m2["exact_match"], m2["per_pattern"]) == (m["exact_match"], m["per_pattern"])


def test_eval_model_without_the_classes_one_line(lot, tiny_wafer_head_dir, tmp_path, capsys, one_error_line):
    d, _ = lot
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--taxonomy", str(YAML), "--out", str(out),
                 "--langs", "en"]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(tiny_wafer_head_dir), "--data", str(out / "val.jsonl"),
                 "--out", str(tmp_path / "m.json"), "--quiet"]) == 2
    line = one_error_line()
    assert re.search(r"record 'labels-0' field 'labels\.defects': class 'Reticle-Repeat' is not in the model's "
                     r"taxonomy", line), line
    assert not (tmp_path / "m.json").exists()


def _wafer_rows(rep: Path) -> dict:
    with open(rep / "wafers.csv", newline="") as fh:
        return {Path(r["image"]).name: r for r in csv.DictReader(fh)}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_predict_lot_report_reads_answers_in_the_models_taxonomy(lot, fab_model, tmp_path, fmt):
    d, g = lot
    (d / "labels.csv").unlink()
    out, rep = tmp_path / f"pred.{fmt}", tmp_path / "report"
    assert main(["predict", str(d), "--model", str(fab_model), "-q", Q, "-o", str(out), "--no-progress",
                 "--lot-report", str(rep)]) == 0
    tax = load(fab_model)
    if fmt == "jsonl":
        rows = [json.loads(x) for x in out.read_text().splitlines()]
    else:
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
    summary = json.loads((rep / "lot_summary.json").read_text())["lots"]["LOT7"]
    wafers = {w["image"]: w for w in summary["wafers"]}
    assert len(wafers) == 4
    counted: dict = {}
    for r in rows:
        want = parse_diagnosis(r["answer"], tax)
        assert want is not None
        if fmt == "jsonl":  # the head's structured answer: the same classes
            assert tuple(r["defects"]) == want
        diag = "+".join(want) or "Normal"
        assert wafers[r["image"]]["diagnosis"] == diag
        for p in diag.split("+"):
            counted[p] = counted.get(p, 0) + 1
    assert summary["wafers_per_pattern"] == counted
    assert (rep / "grid_LOT7.png").stat().st_size > 0 and len(_wafer_rows(rep)) == 4


def test_lot_report_counts_new_classes_only_in_their_taxonomy(lot, fab_model, tmp_path):
    from domainvlm.domains.wafer.lot_report import write_lot_report

    d, g = lot
    answers = ["Diagnosis: Reticle-Repeat", "Diagnosis: Center + Probe-Card\n- Center: ...",
               "诊断：缺口簇(Notch-Cluster)", "Diagnosis: Normal"]
    images = [f"{d / 'wafers_1_2.xml'}#0", f"{d / 'wafers_1_2.xml'}#1", f"{d / 'wafer_3.stdf'}#0",
              f"{d / 'wafer_4.klarf'}#0"]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": str(i), "image": im, "answer": a, "error": None}) + "\n"
                            for i, (im, a) in enumerate(zip(images, answers))))
    s = write_lot_report(pred, tmp_path / "own", fab_model)["lots"]["LOT7"]
    assert [w["diagnosis"] for w in s["wafers"]] == ["Reticle-Repeat", "Center+Probe-Card", "Notch-Cluster",
                                                     "Normal"]
    assert s["wafers_per_pattern"] == {"Normal": 1, "Center": 1, "Reticle-Repeat": 1, "Probe-Card": 1,
                                       "Notch-Cluster": 1}
    assert "| Probe-Card | 1 |" in (tmp_path / "own" / "lot_report.md").read_text()
    for w, grid in zip(s["wafers"], g):  # yield per wafer from the map files
        n_pass, n_fail = int((grid == 1).sum()), int((grid == 2).sum())
        assert w["yield"] == round(n_pass / (n_pass + n_fail), 4)
    # the 8-pattern taxonomy (a model folder without taxonomy.json) cannot read the new classes
    s0 = write_lot_report(pred, tmp_path / "old", None)["lots"]["LOT7"]
    assert [w["diagnosis"] for w in s0["wafers"]] == ["(unparsed)"] * 3 + ["Normal"]


def test_train_expert_new_data_may_be_a_labels_csv(lot, tmp_path):
    """train-expert's new_data / new_test: the labels CSV of map files gives the same banks as a labelled npz."""
    from types import SimpleNamespace

    from domainvlm.domains.wafer.expert_data import class_names
    from domainvlm.domains.wafer.expert_extend import new_banks
    from domainvlm.domains.wafer.labelled import save_labelled_npz
    from domainvlm.domains.wafer.mapfiles.labels import labelled_maps
    from domainvlm.errors import UserError

    d, g = lot
    tax = extend(default(), YAML)
    ws = labelled_maps(d / "labels.csv", tax, str(YAML))
    assert ws.defects == [tuple(x) for x in GOLD] and ws.split == ["val"] * 4 and ws.taxonomy == "custom"
    assert all(np.array_equal(a, b) for a, b in zip(ws.maps, g))
    npz = tmp_path / "same.npz"
    save_labelled_npz(ws, npz, tax)
    cfg = SimpleNamespace(new_data=str(d / "labels.csv"), new_val=None, new_test=str(npz), limit_maps=None,
                          taxonomy=str(YAML))
    banks = new_banks(cfg, tax, class_names(tax), 32, "cpu")
    assert banks["val"] is None and banks["train"].defects == banks["test"].defects
    assert bool((banks["train"].canvas == banks["test"].canvas).all())
    assert banks["train"].cls.tolist() == banks["test"].cls.tolist()
    (d / "labels.csv").write_text("image,labels\nwafer_3.stdf,Probe-Kard\n")
    with pytest.raises(UserError, match=r"labels\.csv:2: field 'labels': unknown wafer pattern 'Probe-Kard'"):
        new_banks(cfg, tax, class_names(tax), 32, "cpu")


def test_where_questions_name_the_models_own_classes(fab_model):
    """'Where is the Probe-Card?' is a fact question for a model whose taxonomy has the class (its evidence is
    worded with the class's zh name), and no fact question for the 8-pattern vocabulary."""
    from domainvlm.domains.wafer.questions import fact_question
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.inference.engine import Engine, Sampling

    tax = load(fab_model)
    assert fact_question("Where is the Probe-Card on this wafer?") is None
    assert fact_question("Where is the Probe-Card on this wafer?", tax) == ("where", "Probe-Card")
    assert fact_question("探针卡行列在哪里？", tax) == ("where", "Probe-Card")
    assert fact_question("Where is the Edge-Loc?", tax) == ("where", "Edge-Loc")  # not Loc
    eng = Engine(str(fab_model), threads=2)
    img = render_map(synth_map(("Probe-Card",), 52, np.random.default_rng(0)))
    ask = lambda q: eng.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img])],  # noqa: E731
                                 Sampling(max_new_tokens=64))[0]
    en, zh = ask("Where is the Probe-Card on this wafer?"), ask("探针卡行列在哪里？")
    assert en.startswith(("Probe-Card: ", "No Probe-Card is seen on this map (diagnosis: ")), en
    assert zh.startswith("探针卡行列：") or zh.startswith("这张图上没有看到探针卡行列"), zh


def test_eval_check_names_a_mixture_the_taxonomy_does_not_answer(fab_model):
    from domainvlm.data.record import Record
    from domainvlm.domains.wafer.metrics import check_records
    from domainvlm.errors import UserError

    def rec(i, defects, taxonomy="custom"):
        return Record(id=f"r{i}", images=["x.png"], messages=[], labels={"task": "wafer", "defects": defects,
                                                                          "taxonomy": taxonomy})

    ok = [rec(0, ["Center", "Probe-Card"]), rec(1, []), rec(2, ["Edge-Loc"], "wm811k")]
    assert check_records(ok, str(fab_model)).names[-3:] == ["Reticle-Repeat", "Probe-Card", "Notch-Cluster"]
    with pytest.raises(UserError, match=r"record 'r3' field 'labels\.defects': Reticle-Repeat\+Probe-Card is no "
                                        r"answer of the model's taxonomy"):
        check_records(ok + [rec(3, ["Reticle-Repeat", "Probe-Card"])], str(fab_model))
    with pytest.raises(UserError, match=r"record 'r0' .*class 'Probe-Card' is not in the model's taxonomy "
                                        r"\(the 8 known patterns"):
        check_records(ok, None)


def test_a_label_text_is_the_same_label_set_in_a_labels_csv_and_a_labelled_npz(lot, tmp_path):
    """Both readers split a label on '+', ';' and '|' (patterns.split_labels); the npz reader used to split on
    '+' only, so 'Center; Probe-Card' was one unknown class there and two classes in a CSV."""
    from domainvlm.domains.wafer.labelled import build_records, load_labelled_npz
    from domainvlm.domains.wafer.mapfiles.labels import read_labelled
    from domainvlm.domains.wafer.npz_writers import flat_arrays, write_npz
    from domainvlm.domains.wafer.sources import WaferSet, load_labelled_maps

    d, g = lot
    texts = ["Reticle-Repeat", "Center; Probe-Card", " Notch-Cluster | Center+Probe-Card ", "Normal"]
    gold = [("Reticle-Repeat",), ("Center", "Probe-Card"), ("Center", "Probe-Card", "Notch-Cluster"), ()]
    refs = ["wafers_1_2.xml#0", "wafers_1_2.xml#1", "wafer_3.stdf", "wafer_4.klarf#0"]
    (d / "labels.csv").write_text("image,labels\n" + "".join(f'{r},"{t}"\n' for r, t in zip(refs, texts)))
    npz = tmp_path / "same.npz"
    write_npz(npz, flat_arrays(WaferSet(g, [()] * 4, None, "custom", "custom", str(npz))) | {"labels": np.array(texts)})
    tax = extend(default(), YAML)
    csv_sets = [r[1] for r in read_labelled(d / "labels.csv", tax, str(YAML))]
    npz_sets = load_labelled_npz(npz, tax).defects  # train-expert's new_data
    records = build_records(load_labelled_maps(npz), npz, range(4), taxonomy=YAML)  # data build / eval
    assert [tax.canonical(x) for x in gold] == csv_sets == npz_sets
    assert [tuple(r.labels["defects"]) for r in records] == csv_sets
