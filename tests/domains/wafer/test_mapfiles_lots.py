"""Lot-level gaps of the fab map files: one multi-wafer file as a `predict` input, lot report file names."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mapfile_writers as W
from domainvlm.cli import main
from domainvlm.domains.wafer.synth import synth_map

Q = "What defect pattern does this wafer map show?"


@pytest.fixture(scope="module")
def grids():
    rng = np.random.default_rng(5)
    return [synth_map(p, 40, rng) for p in (("Center",), ("Donut",), ())]


@pytest.mark.parametrize("name,make", [("lot.stdf", W.stdf_bytes), ("lot.klarf", W.klarf18), ("lot.xml", W.g85_xml)])
def test_predict_one_multi_wafer_file_one_row_per_wafer(grids, tmp_path, name, make, capsys):
    f = tmp_path / name
    data = make(grids)
    f.write_bytes(data if isinstance(data, bytes) else data.encode())
    out, rep = tmp_path / "p.jsonl", tmp_path / "rep"
    assert main(["predict", str(f), "-q", Q, "-o", str(out), "--no-progress", "--lot-report", str(rep)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["image"]) for r in rows] == [(f"{name}#{k}", f"{f}#{k}") for k in range(3)]
    assert all(r["answer"] and not r["error"] for r in rows)
    lots = json.loads((rep / "lot_summary.json").read_text())["lots"]
    assert [w["pass"] for w in lots["LOT7"]["wafers"]] == [int((g == 1).sum()) for g in grids]


def test_predict_one_map_file_default_question_and_bad_file_is_one_line(grids, tmp_path, capsys):
    f = tmp_path / "lot.stdf"
    f.write_bytes(W.stdf_bytes(grids)[:-7])
    assert main(["predict", str(f), "-o", str(tmp_path / "p.jsonl"), "--no-progress", "-q", Q]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "REC_LEN" in err[0] and not (tmp_path / "p.jsonl").exists()
    f.write_bytes(W.stdf_bytes(grids))
    # no --question: the bundled expert's own question for every wafer, said on stderr
    assert main(["predict", str(f), "-o", str(tmp_path / "p.jsonl"), "--no-progress"]) == 0
    assert f"asking every input {Q!r}" in capsys.readouterr().err
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {r["question"] for r in rows} == {Q} and all(r["answer"] for r in rows)


def test_lot_report_grid_names_unique_for_lots_differing_in_punctuation(grids, tmp_path):
    from domainvlm.domains.wafer.lot_report import write_lot_report

    rows = []
    for k, lot in enumerate(("LOT/7", "LOT_7", "LOT7", "lot7")):
        f = tmp_path / f"w{k}.map"
        f.write_text(W.g85_ascii(grids[k % 3:k % 3 + 1]).replace("LOT:LOT7", f"LOT:{lot}"))
        rows.append({"id": str(k), "image": str(f), "answer": "Diagnosis: Normal", "error": None})
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = write_lot_report(pred, tmp_path / "rep")
    names = {lot: s["lots"][lot]["grid_png"] for lot in ("LOT/7", "LOT_7", "LOT7", "lot7")}
    assert names["LOT7"] == "grid_LOT7.png" and len({n.casefold() for n in names.values()}) == 4, names
    md = (tmp_path / "rep" / "lot_report.md").read_text()
    for lot, png in names.items():
        assert (tmp_path / "rep" / png).is_file() and f"![maps]({png})" in md
    assert names == {lot: v["grid_png"] for lot, v in
                     json.loads((tmp_path / "rep" / "lot_summary.json").read_text())["lots"].items()}


def test_lot_report_says_when_a_wafer_id_comes_from_two_files(grids, tmp_path):
    """A retest exported as a second file counted 4 wafers of a 2-wafer lot with no word of it."""
    from domainvlm.domains.wafer.lot_report import write_lot_report

    rows = []
    for name in ("first.xml", "retest.xml"):
        (tmp_path / name).write_text(W.g85_xml(grids[:2]))
        rows += [{"id": f"{name}#{k}", "image": f"{tmp_path / name}#{k}", "answer": "Diagnosis: Normal",
                  "error": None} for k in range(2)]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lot = write_lot_report(pred, tmp_path / "rep")["lots"]["LOT7"]
    assert lot["n_wafers"] == 4 and lot["repeated_wafer_ids"] == {"LOT7-01": ["first.xml", "retest.xml"],
                                                                  "LOT7-02": ["first.xml", "retest.xml"]}
    md = (tmp_path / "rep" / "lot_report.md").read_text()
    assert "Wafer LOT7-01 appears 2 times (first.xml, retest.xml)" in md
