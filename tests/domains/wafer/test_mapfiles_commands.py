"""Fab map files through the commands and the bundled wafer expert: the same diagnosis as from the npz, ask /
predict (one row per wafer, lot report) / data build + eval from a labels CSV, the HTTP API and the web UI."""

from __future__ import annotations

import base64
import csv
import json

import numpy as np
import pytest
from PIL import Image

import mapfile_writers as W
from domainvlm.cli import main
from domainvlm.data.images import load_image
from domainvlm.data.record import IMAGE_TOKEN
from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.domains.wafer.knowledge import parse_diagnosis
from domainvlm.inference.engine import Engine, Sampling

Q = "What defect pattern does this wafer map show?"
S = Sampling(max_new_tokens=256)  # whole head answers: the API cuts them at max_new_tokens (cut_head_answers)
WRITERS = {"g85.xml": lambda g: W.g85_xml(g, "HexaDecimal", 90), "g85.map": lambda g: W.g85_ascii(g, 180),
           "e142.xml": lambda g: W.e142_xml(g, "Integer2", 270), "sort.stdf": lambda g: W.stdf_bytes(g, ">", "L"),
           "insp.000": lambda g: W.klarf12(g, "UP"), "insp.klarf": lambda g: W.klarf18(g, "RIGHT")}


@pytest.fixture(scope="module")
def expert():
    return Engine(None, threads=2)  # the bundled wafer expert


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _diagnose(engine, images):
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{Q}"}]
    return [parse_diagnosis(a) for a in engine.generate([(msgs, [im]) for im in images], S)]


def test_same_diagnosis_from_npz_and_every_format(shared_data, expert, tmp_path):
    """20 real MixedWM38 val maps, each format holding all 20 as one multi-wafer file."""
    from domainvlm.domains.wafer.sources import load_wafer_file

    npz = shared_data / "mixedwm38" / "mixedwm38_trainval.npz"
    ws = load_wafer_file(npz)
    val = [i for i, s in enumerate(ws.split) if s == "val"]
    idx = [val[j] for j in np.random.default_rng(7).choice(len(val), 20, replace=False)]
    npz_images = [load_image(f"{npz}#{i}") for i in idx]
    want = _diagnose(expert, npz_images)
    assert sum(w is not None for w in want) == 20
    file_images = []
    for name, make in WRITERS.items():
        f = _write(tmp_path / name, make([ws.maps[i] for i in idx]))
        file_images += [load_image(f"{f}#{k}") for k in range(20)]
    got = _diagnose(expert, file_images)  # one batch: 6 formats x 20 wafers
    for j, name in enumerate(WRITERS):
        assert got[20 * j:20 * (j + 1)] == want, name
        assert all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(file_images[20 * j:20 * (j + 1)], npz_images)), name


@pytest.fixture
def lot(tmp_path):
    rng = np.random.default_rng(3)
    g = [synth_map(p, 52, rng) for p in (("Center",), ("Edge-Ring",), ("Scratch",), ())]
    d = tmp_path / "lot"
    d.mkdir()
    _write(d / "wafers_1_2.xml", W.g85_xml(g[:2]))
    _write(d / "wafer_3.stdf", W.stdf_bytes(g[2:3]))
    _write(d / "wafer_4.klarf", W.klarf18(g[3:]))
    (d / "notes.txt").write_text("not a map\n")
    return d, g


def test_ask_accepts_file_and_index(lot, capsys):
    d, g = lot
    assert main(["ask", "--image", f"{d / 'wafers_1_2.xml'}#1", Q]) == 0
    out = capsys.readouterr().out
    assert main(["ask", "--image", str(d / "wafers_1_2.xml"), "--index", "1", Q]) == 0
    assert capsys.readouterr().out == out and out.startswith("Diagnosis:")


def test_predict_folder_one_row_per_wafer_and_lot_report(lot, tmp_path, expert, capsys):
    d, g = lot
    out, rep = tmp_path / "pred.jsonl", tmp_path / "report"
    assert main(["predict", str(d), "-q", Q, "-o", str(out), "--no-progress", "--lot-report", str(rep)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["wafer_3.stdf#0", "wafer_4.klarf#0", "wafers_1_2.xml#0", "wafers_1_2.xml#1"]
    assert all(r["image"] == f"{d / r['id'].split('#')[0]}#{r['id'].split('#')[1]}" and not r["error"] for r in rows)
    want = expert.generate([([{"role": "user", "content": f"{IMAGE_TOKEN}\n{Q}"}], [render_map(g[k])])
                            for k in (2, 3, 0, 1)], Sampling(max_new_tokens=256))
    assert [r["answer"] for r in rows] == want
    summary = json.loads((rep / "lot_summary.json").read_text())
    lot7 = summary["lots"]["LOT7"]
    assert lot7["n_wafers"] == 4 and summary["rows_not_wafer_maps"] == 0
    by_image = {w["image"]: w for w in lot7["wafers"]}
    for r, k in zip(rows, (2, 3, 0, 1)):
        w = by_image[r["image"]]
        n_pass, n_fail = int((g[k] == 1).sum()), int((g[k] == 2).sum())
        assert (w["pass"], w["fail"]) == (n_pass, n_fail)
        assert w["yield"] == round(n_pass / (n_pass + n_fail), 4)
        assert w["diagnosis"] == ("+".join(parse_diagnosis(r["answer"])) or "Normal")
    counted = {}
    for w in lot7["wafers"]:
        for p in w["diagnosis"].split("+"):
            counted[p] = counted.get(p, 0) + 1
    assert lot7["wafers_per_pattern"] == counted
    with open(rep / "wafers.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    md = (rep / "lot_report.md").read_text()
    assert "## Lot LOT7" in md and "| wafer | file | yield |" in md
    png = Image.open(rep / "grid_LOT7.png")
    assert png.size[0] == 4 * 176


def test_predict_folder_bad_file_is_one_row_with_its_error(lot, tmp_path):
    d, _ = lot
    data = (d / "wafer_3.stdf").read_bytes()
    (d / "wafer_3.stdf").write_bytes(data[:-7])
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(d), "-q", Q, "-o", str(out), "--no-progress"]) == 1
    rows = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert "REC_LEN" in rows["wafer_3.stdf"]["error"] and len(rows) == 4


def _build_val(d, tmp_path, labels_of_four):
    """`data build` of a labels CSV naming the lot's four wafers (val split) -> (csv, out folder, val records)."""
    labels = d / "labels.csv"
    refs = ("wafers_1_2.xml#0", "wafers_1_2.xml#1", "wafer_3.stdf", "wafer_4.klarf#0")
    labels.write_text("image,labels,split\n" + "".join(f"{r},{lab},val\n" for r, lab in zip(refs, labels_of_four)))
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(labels), "--out", str(out), "--langs", "en"]) == 0
    return labels, out, [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]


def test_data_build_from_labels_csv_then_eval(lot, tmp_path, capsys):
    labels, out, recs = _build_val(lot[0], tmp_path, ("Center", "Edge-Ring", "Scratch", "Normal"))
    assert [r["images"][0].rsplit("/", 1)[1] for r in recs] == ["wafers_1_2.xml#0", "wafers_1_2.xml#1",
                                                                  "wafer_3.stdf#0", "wafer_4.klarf#0"]
    assert [r["labels"]["defects"] for r in recs] == [["Center"], ["Edge-Ring"], ["Scratch"], []]
    capsys.readouterr()
    assert main(["eval", "--data", str(out / "val.jsonl"), "--out", str(tmp_path / "m.json"), "--quiet"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 4 and m["unparsed"] == 0
    assert main(["eval", "--data", str(labels), "--out", str(tmp_path / "m2.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["exact_match"] == m["exact_match"]


@pytest.mark.parametrize("row,match", [
    ("wafers_1_2.xml#5,Center", r"labels\.csv:2: field 'image': .*wafers_1_2\.xml#5: field #K: index out of range"),
    ("wafers_1_2.xml,Center", r"labels\.csv:2: field 'image': .*holds 2 wafers"),
    ("wafer_3.stdf,Bogus", r"labels\.csv:2: field 'labels': unknown wafer pattern 'Bogus'"),
    ("notes.txt,Center", r"labels\.csv:2: field 'image': .*notes\.txt is not a wafer-map file")])
def test_data_build_bad_rows_one_line_nothing_written(lot, tmp_path, capsys, row, match):
    import re

    d, _ = lot
    (d / "labels.csv").write_text(f"image,labels\n{row}\n")
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("text,match", [
    ("image,labels,split\nwafer_3.stdf,Center,trian\n", r"labels\.csv: split 'trian' is not a split name \(did you "
                                                         r"mean 'train'\?"),
    ("image,labels\nwafer_3.stdf,Center,extra\n", r"labels\.csv:2: 1 field\(s\) more than the header"),
    ("image,label\nwafer_3.stdf,Center\n", r"labels\.csv:1: column 'labels' missing .*found: image, label"),
    ("image;labels\nwafer_3.stdf;Center\n", r"labels\.csv:1: one column 'image;labels': separate the columns")])
def test_labels_csv_layout_mistakes_are_one_line(lot, tmp_path, capsys, text, match):
    """A split typo wrote trian.jsonl, a stray cell was dropped, a wrong header or separator got 'not a
    recognised data source': each is now one line naming the file (and line), nothing written."""
    import re

    d, _ = lot
    (d / "labels.csv").write_text(text)
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not out.exists() or not any(out.iterdir())


def test_labels_csv_split_spellings_and_blank_rows(lot, tmp_path):
    """'Validation' rows are val rows (val.jsonl, as the picture reader writes them); a blank ',,' row is skipped."""
    d, _ = lot
    (d / "labels.csv").write_text("image,labels,split\nwafer_3.stdf,Center,Validation\n,,\n"
                                  "wafer_4.klarf#0,Scratch,Training\n")
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--out", str(out), "--langs", "en"]) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["train.jsonl", "val.jsonl"]
    val = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert len(val) == 1 and val[0]["meta"]["split"] == "val" and val[0]["labels"]["defects"] == ["Center"]


def test_labels_as_people_type_them(lot, tmp_path, capsys):
    """Case, spaces / '_' for '-', the Chinese names and none words in any case name the same classes; a near
    miss ('scratches') stays an error, naming the class it is close to."""
    labels, _, recs = _build_val(lot[0], tmp_path, ("center", "EDGE_RING; 中心", "Scratch", "none"))
    assert [r["labels"]["defects"] for r in recs] == [["Center"], ["Center", "Edge-Ring"], ["Scratch"], []]
    labels.write_text("image,labels\nwafer_3.stdf,scratches\n")
    assert main(["data", "build", "--source", str(labels), "--out", str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown wafer pattern 'scratches'" in err[0] and "(did you mean 'Scratch'?)" in err[0]


def test_labels_csv_in_a_local_code_page_is_one_line(lot, tmp_path, capsys):
    """A spreadsheet's cp1252 export: a non-UTF-8 byte on line 3 names the file and line (was a traceback)."""
    d, _ = lot
    (d / "labels.csv").write_bytes("image,labels\nwafer_3.stdf,Scratch\nwafer_4.klarf,Center # Müller\n"
                                   .encode("cp1252"))
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(d / "labels.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels.csv:3: not UTF-8 text (byte 0xfc)" in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_cli_bad_map_files_one_line(lot, tmp_path, capsys):
    d, _ = lot
    bad = _write(tmp_path / "t.stdf", (d / "wafer_3.stdf").read_bytes()[:300])
    assert main(["ask", "--image", str(bad), Q]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "REC_LEN" in err[0]
    assert main(["ask", "--image", f"{d / 'wafers_1_2.xml'}#2", Q]) == 2
    assert "field #K: index out of range" in capsys.readouterr().err
    assert main(["data", "build", "--source", str(d / "wafer_4.klarf"), "--out", str(tmp_path / "o")]) == 2
    assert "carries no pattern labels" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_http_api_accepts_map_file_uploads(lot, expert):
    from fastapi.testclient import TestClient

    from domainvlm.inference.batcher import Batcher
    from domainvlm.serve.app import ServeConfig, create_app

    d, g = lot
    client = TestClient(create_app(Batcher(expert), ServeConfig(sampling=S)), raise_server_exceptions=False)
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    want = expert.generate([([{"role": "user", "content": f"{IMAGE_TOKEN}\n{Q}"}], [render_map(g[k])])
                            for k in (2, 1)], S)
    content = [{"type": "text", "text": Q}, {"type": "image_url", "image_url": {
        "url": f"data:application/octet-stream;base64,{b64(d / 'wafer_3.stdf')}"}}]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}],
                                                  "max_tokens": 256})
    # the upload is drawn unpadded and redrawn on the canvas, the CLI draws it there at once: same diagnosis and
    # text, a slightly different confidence (its last line)
    same = lambda a, b: a.rsplit("\nConfidence:", 1)[0] == b.rsplit("\nConfidence:", 1)[0]  # noqa: E731
    assert r.status_code == 200 and same(r.json()["choices"][0]["message"]["content"], want[0])
    r = client.post("/", json={"text": Q, "image": b64(d / "wafers_1_2.xml") + "#1", "history": []})
    assert r.status_code == 200 and same(r.json()["response"], want[1])
    wrapped = "\n".join(b64(d / "wafers_1_2.xml")[i:i + 76] for i in range(0, len(b64(d / "wafers_1_2.xml")), 76))
    r = client.post("/", json={"text": Q, "image": wrapped + "\n#1", "history": []})  # `base64`'s 76 columns
    assert r.status_code == 200 and same(r.json()["response"], want[1]), r.text
    r = client.post("/", json={"text": Q, "image": b64(d / "wafers_1_2.xml"), "history": []})
    assert r.status_code == 400 and "holds 2 wafers" in r.json()["error"]["message"]
    r = client.post("/", json={"text": Q, "image": b64(d / "wafers_1_2.xml") + "#5", "history": []})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "image" and "#5 is out of range" in err["message"], err
    bad = base64.b64encode((d / "wafer_3.stdf").read_bytes()[:-7]).decode()
    r = client.post("/", json={"text": Q, "image": bad, "history": []})
    assert r.status_code == 400 and "REC_LEN" in r.json()["error"]["message"]


def test_web_ui_map_file_box(lot, expert, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from domainvlm.webui.app import build_demo

    d, g = lot
    demo = build_demo(expert)
    fn = next(f for f in demo.fns.values() if f.name == "show_map_file").fn
    img = fn(str(d / "wafers_1_2.xml"), 1)
    assert np.array_equal(np.asarray(img), np.asarray(render_map(g[1])))
    import gradio as gr

    with pytest.raises(gr.Error, match="index out of range"):
        fn(str(d / "wafers_1_2.xml"), 4)


def test_predict_folder_reads_a_map_file_named_like_an_image(lot, tmp_path, capsys):
    """Detected by content, any name: a G85 file saved as 'scan.png' was one error row ('holds 2 wafers')."""
    from PIL import Image

    d, _ = lot
    f = tmp_path / "f"
    f.mkdir()
    (f / "scan.png").write_bytes((d / "wafers_1_2.xml").read_bytes())
    Image.new("RGB", (52, 52), (0, 128, 0)).save(f / "photo.png")
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(f), "-q", Q, "-o", str(out), "--no-progress"]) == 0
    rows = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert sorted(rows) == ["photo.png", "scan.png#0", "scan.png#1"] and not any(r.get("error") for r in rows.values())
