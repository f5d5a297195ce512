"""Map files as a new user's tools wrote them (exploratory QA of 2026-12-06): a pass-bin override that names no
code of a SINF file, rows with no codes, a null marker the file does not declare, XML comments before the root,
lower-case tags, a labels CSV row cut short, a labelled map with no dies, an STDF file without its MRR."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mapfile_writers as W
from domainvlm.domains.wafer import mapfiles as MF
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.errors import UserError

SINF = "WAFER:W1\nBCEQU:01\nNULBC:__\nRowData:__ 01 1A\nRowData:01 01 01\n"


def _err(path, **kw) -> str:
    with pytest.raises(UserError) as e:
        MF.read_maps(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def _write(tmp_path, name, text) -> str:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


@pytest.mark.parametrize("bins", ["9", "abc"])  # 'abc' is a valid hex code, just none of this file's
def test_sinf_pass_bins_naming_no_code_of_the_file_is_an_error(tmp_path, monkeypatch, bins):
    """SINF lists no fail bins, so every non-pass code failed: a typo gave 0 % yield, diagnosed Near-full."""
    f = _write(tmp_path, "s.txt", SINF)
    monkeypatch.setenv("DOMAINVLM_PASS_BINS", bins)
    msg = _err(f)
    assert f"none of {bins} is a bin code of this file" in msg and "01, 1A" in msg
    monkeypatch.setenv("DOMAINVLM_PASS_BINS", "01")
    assert MF.read_maps(f)[0].counts() == {"dies": 5, "pass": 4, "fail": 1, "yield": 0.8}


def test_sinf_pass_bins_checked_over_the_whole_file(tmp_path):
    """One all-fail wafer of a lot is real: the override is refused only when no wafer has a pass code."""
    two = SINF + "WAFER:W2\nRowData:1A 1A 1A\nRowData:1A __ 1A\n"
    maps = MF.read_maps(_write(tmp_path, "s.txt", two), pass_bins=["01"])
    assert [m.counts()["pass"] for m in maps] == [4, 0]


@pytest.mark.parametrize("name,text", [
    ("g.xml", W.g85_xml([np.ones((2, 2), np.uint8)], rows_override={0: "", 1: ""})
     .replace('Rows="2" Columns="2"', 'Rows="2" Columns="0"')),
    ("s.txt", "WAFER:1\nBCEQU:01\nNULBC:__\nRowData:\nRowData:\n"),
])
def test_rows_with_no_codes_are_one_line_naming_the_file(tmp_path, name, text):
    """A (rows, 0) map reached the renderer and the lot report, which failed without the file's name."""
    msg = _err(_write(tmp_path, name, text))
    assert "wafer 0" in msg and "field BinCode: the map rows hold no bin codes (a 2x0 map)" in msg


def test_undeclared_null_marker_says_how_to_declare_it(tmp_path):
    msg = _err(_write(tmp_path, "s.txt", SINF.replace("NULBC:__\n", "")))
    assert "'__' is not a hexadecimal bin code" in msg and "NULBC:__" in msg


def test_xml_comment_holding_a_tag_before_the_root(tmp_path):
    g = synth_map(("Center",), 20, np.random.default_rng(0))
    text = W.g85_xml([g]).replace("<Maps>", "<!-- exported by <Tool> v2 -->\n<Maps>", 1)
    f = _write(tmp_path, "g.xml", text)
    assert MF.sniff(f) == "g85-xml"
    np.testing.assert_array_equal(MF.read_maps(f)[0].grid, g)


def test_lower_case_root_is_named_with_the_spelling_the_spec_uses(tmp_path):
    msg = _err(_write(tmp_path, "g.xml", '<?xml version="1.0"?>\n<maps><map/></maps>\n'))
    assert "<maps>" in msg and "<Maps>" in msg and "case-sensitive" in msg


def test_labels_csv_row_without_a_labels_cell_is_refused(tmp_path):
    """A row cut short was labelled Normal; an empty cell ('file,') still means Normal."""
    from domainvlm.domains.wafer.mapfiles.labels import read_labelled

    g = synth_map(("Center",), 20, np.random.default_rng(0))
    _write(tmp_path, "a.xml", W.g85_xml([g, g]))
    csv = tmp_path / "labels.csv"
    csv.write_text("image,labels\na.xml#0,Center\na.xml#1\n")
    with pytest.raises(UserError) as e:
        read_labelled(csv)
    assert str(e.value).startswith(f"{csv}:3: field 'labels': missing")
    csv.write_text("image,labels\na.xml#0,Center\na.xml#1,\n")
    assert [r[1] for r in read_labelled(csv)] == [("Center",), ()]


def test_labelled_map_with_no_dies_is_refused(tmp_path):
    from domainvlm.domains.wafer.mapfiles.labels import read_labelled

    _write(tmp_path, "n.xml", W.g85_xml([np.zeros((5, 5), np.uint8)]))
    csv = tmp_path / "labels.csv"
    csv.write_text("image,labels\nn.xml,Center\n")
    with pytest.raises(UserError) as e:
        read_labelled(csv)
    assert str(e.value).startswith(f"{csv}:2: field 'image'") and "no dies" in str(e.value)


def _record_ends(data: bytes) -> list[tuple[int, tuple[int, int]]]:
    out, pos = [], 0
    while pos < len(data):
        key = (data[pos + 2], data[pos + 3])
        pos += 4 + int.from_bytes(data[pos:pos + 2], "little")
        out.append((pos, key))
    return out


def test_stdf_without_mrr_is_read_and_said_in_the_lot_report(tmp_path, capsys):
    """Cut after a WRR, a 3-wafer lot read as 2 wafers with no word of it."""
    from domainvlm.domains.wafer.lot_report import write_lot_report

    rng = np.random.default_rng(1)
    data = W.stdf_bytes([synth_map(("Center",), 20, rng) for _ in range(3)], seed=1)
    second_wrr = [end for end, key in _record_ends(data) if key == (2, 20)][1]
    f = _write(tmp_path, "lot.stdf", data[:second_wrr])
    maps = MF.read_maps(f)
    assert len(maps) == 2 and all(m.meta["ends_without_mrr"] for m in maps)
    assert "no MRR at the end" in capsys.readouterr().err
    assert not any("ends_without_mrr" in m.meta for m in MF.read_maps(_write(tmp_path, "whole.stdf", data)))
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": str(k), "image": f"{f}#{k}", "answer": "Diagnosis: Center",
                                        "error": None}) + "\n" for k in range(2)))
    lot = next(iter(write_lot_report(pred, tmp_path / "rep")["lots"].values()))
    assert lot["files_without_end_record"] == ["lot.stdf"]
    assert "lot.stdf: no end-of-lot record" in (tmp_path / "rep" / "lot_report.md").read_text()


def test_lot_report_wafer_without_dies_and_ids_with_pipes(tmp_path):
    """A no-die wafer counted as 0 % yield in the lot's mean; a '|' in a wafer id broke the pasted table."""
    from domainvlm.domains.wafer.lot_report import write_lot_report

    g = synth_map(("Center",), 20, np.random.default_rng(0))
    _write(tmp_path, "a.xml", W.g85_xml([g, np.zeros((5, 5), np.uint8)], wafer_ids=["W|01", "W02"]))
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": str(k), "image": f"{tmp_path / 'a.xml'}#{k}",
                                        "answer": "Diagnosis: Center", "error": None}) + "\n" for k in range(2)))
    lot = write_lot_report(pred, tmp_path / "rep")["lots"]["LOT7"]
    y = int((g == 1).sum()) / int((g > 0).sum())
    assert lot["mean_yield"] == round(round(y, 4), 4) and lot["wafers_without_dies"] == 1
    assert [w["yield"] for w in lot["wafers"]][1] is None
    md = (tmp_path / "rep" / "lot_report.md").read_text()
    assert "2 wafers, mean yield" in md and "(1 without dies left out)" in md
    row = next(line for line in md.splitlines() if "W\\|01" in line)
    assert row.count("|") - row.count("\\|") == 7  # six cells
    assert "| W02 | a.xml#1 | - | 0 | 0 |" in md


def test_file_url_with_wafer_index(tmp_path):
    """`file:///lot.xml#1` ignored its #K, so a multi-wafer local file could not be sent at all."""
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.inference.image_input import ImageInputError, load_url

    rng = np.random.default_rng(2)
    gs = [synth_map(p, 24, rng) for p in (("Center",), ("Donut",))]
    f = tmp_path / "lot.xml"
    f.write_text(W.g85_xml(gs))
    img = load_url(f.as_uri() + "#1", local_root=tmp_path)
    assert np.array_equal(np.asarray(img), np.asarray(render_map(MF.get_wafer(str(f), 1).grid)))
    for frag, match in (("#5", "#5 is out of range"), ("#x", "%23")):
        with pytest.raises(ImageInputError, match=match):
            load_url(f.as_uri() + frag, local_root=tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ImageInputError, match="not a wafer-map file"):
        load_url((tmp_path / "a.png").as_uri() + "#0", local_root=tmp_path)


def test_predict_fixed_file_replaces_its_error_row_and_file_index_input(tmp_path, capsys):
    """A map file that did not read left its error row (id FILE) beside the new rows (FILE#K) on every resume."""
    from domainvlm.cli import main

    rng = np.random.default_rng(3)
    lot = tmp_path / "lot"
    lot.mkdir()
    good = W.g85_xml([synth_map(("Center",), 24, rng)])
    (lot / "a.xml").write_text(good)
    (lot / "b.xml").write_text(good.replace('BinCode="001"', 'BinCode="077"', 1))  # pass code 001 undefined
    out = tmp_path / "p.jsonl"
    args = ["predict", str(lot), "-o", str(out), "--no-progress", "-q", "What defect is this?"]
    assert main(args) == 1
    assert {json.loads(x)["id"] for x in out.read_text().splitlines()} == {"a.xml#0", "b.xml"}
    (lot / "b.xml").write_text(good)
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["a.xml#0", "b.xml#0"] and not any(r["error"] for r in rows)
    capsys.readouterr()
    assert main(["predict", f"{lot / 'a.xml'}#0", "-o", str(tmp_path / "q.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "predict reads whole files" in err and "ask --image" in err and "\n" not in err
