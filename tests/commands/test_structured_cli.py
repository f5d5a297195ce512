"""`ask --json` prints the structured answer; `predict` JSONL rows and CSV columns carry its fields; --format must
match -o."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domainvlm.cli import main

Q = "What defect pattern does this wafer map show?"


@pytest.fixture(scope="module")
def wafer_model(tiny_wafer_head_dir):
    return tiny_wafer_head_dir


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    d = tmp_path_factory.mktemp("maps")
    rng = np.random.default_rng(0)
    for i, p in enumerate([("Center",), ("Scratch",), ()]):
        render_map(synth_map(p, 52, rng)).save(d / f"m{i}.png")
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / "noise.png")
    return d


def test_ask_json(wafer_model, maps, capsys):
    assert main(["ask", "--model", str(wafer_model), "--image", str(maps / "m0.png"), "--json", Q]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["answer"].startswith("Diagnosis:") and 0 <= v["confidence"] <= 1 and v["abstain"] is False
    assert {"defects", "per_pattern", "evidence", "facts", "reason"} <= set(v) and len(v["per_pattern"]) == 8
    assert main(["ask", "--model", str(wafer_model), "--image", str(maps / "noise.png"), "--json", "这是什么缺陷？"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["abstain"] is True and v["reason"] == "out_of_domain" and "不是晶圆图" in v["answer"]


def test_predict_jsonl_rows_carry_the_fields(wafer_model, maps, tmp_path):
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(maps), "-q", Q, "--model", str(wafer_model), "-o", str(out), "--format", "jsonl",
                 "--no-progress"]) == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 4
    for rid, r in rows.items():
        assert {"answer", "defects", "confidence", "per_pattern", "abstain", "evidence", "facts"} <= set(r)
        assert r["abstain"] is (rid.startswith("noise"))
    assert main(["predict", str(maps), "-q", Q, "--model", str(wafer_model), "-o", str(tmp_path / "p.csv"),
                 "--format", "jsonl"]) == 2


def test_predict_csv_rows_carry_the_fields_too(wafer_model, maps, tmp_path):
    import csv

    out = tmp_path / "p.csv"
    args = ["predict", str(maps), "-q", Q, "--model", str(wafer_model), "-o", str(out), "--no-progress"]
    assert main(args) == 0
    rows = {r["id"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert len(rows) == 4
    noise = rows.pop("noise.png")  # turned away: no diagnosis, so no defects, confidence or per-pattern numbers
    assert (noise["abstain"], noise["reason"], noise["defects"], noise["confidence"], noise["per_pattern"]) == \
        ("true", "out_of_domain", "", "", "{}")
    for r in rows.values():
        per = json.loads(r["per_pattern"])
        assert len(per) == 8 and all(0 <= v <= 1 for v in per.values())
        assert 0 <= float(r["confidence"]) <= 1 and r["abstain"] == "false" and r["reason"] == ""
        named = r["answer"].splitlines()[0].removeprefix("Diagnosis: ").split(" + ")
        assert r["defects"].split("; ") == named or (r["defects"] == "" and named in (["Normal"], ["none"]))
    before = out.read_text(encoding="utf-8")
    assert main(args) == 0 and out.read_text(encoding="utf-8") == before  # resumed: the cells kept as they were


def test_ask_evidence_png_without_evidence_head_fails_before_answering(tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), "white").save(tmp_path / "a.png")
    out = tmp_path / "ev.png"
    rc = main(["ask", "--model", str(tiny_model_dir), "--image", str(tmp_path / "a.png"), "q", "--max-new-tokens",
               "2", "--evidence-png", str(out)])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and not out.exists()  # no answer printed, then an error
    assert "--evidence-png" in cap.err and len(cap.err.strip().splitlines()) == 1
    rc = main(["ask", "--model", str(tiny_model_dir), "--image", str(tmp_path / "a.png"), "q", "--max-new-tokens",
               "2", "--evidence-png", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and "is a folder" in cap.err
