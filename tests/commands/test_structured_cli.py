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


def test_ask_evidence_png_draws_nothing_the_answer_withheld(wafer_model, maps, tmp_path, capsys):
    """Below the review threshold the answer abstains and --json has no evidence, yet --evidence-png drew the
    withheld guess's evidence. Now nothing is written and stderr says why; otherwise the PNG is drawn."""
    import shutil

    d = tmp_path / "model"
    shutil.copytree(wafer_model, d)
    (d / "calibration.json").write_text(json.dumps({"temperature": 5.0, "threshold": 0.99}))  # all abstain
    out = tmp_path / "ev.png"
    for extra in ([], ["--json"]):
        rc = main(["ask", "--model", str(d), "--image", str(maps / "m1.png"), *extra, "--evidence-png", str(out), Q])
        cap = capsys.readouterr()
        assert rc == 0 and not out.exists(), extra
        assert "nothing written" in cap.err and "low_confidence" in cap.err and len(cap.err.strip().splitlines()) == 1
    v = json.loads(cap.out)
    assert v["abstain"] is True and v["reason"] == "low_confidence" and v["evidence"] == []
    (d / "calibration.json").unlink()
    assert main(["ask", "--model", str(d), "--image", str(maps / "m1.png"), "--evidence-png", str(out), Q]) == 0
    assert out.exists() and "nothing written" not in capsys.readouterr().err


def test_ask_json_of_a_fact_question_is_the_structured_answer(wafer_model, maps, tmp_path, capsys):
    """'What is the yield?' printed {"answer"} only; now the fields of a diagnosis with the facts, the answer
    the fact. A picture that is no wafer map gets the abstention, not a yield read off its pixels."""
    from domainvlm.domains.wafer.render import render_map

    yy, xx = np.mgrid[:16, :16] - 7.5
    m = np.where(yy ** 2 + xx ** 2 < 56, 1, 0).astype(np.uint8)  # 16 dies a side: whole on the tiny 32 px canvas
    m[6:9, 5:9] = 2
    render_map(m).save(tmp_path / "small.png")
    n, f = int((m > 0).sum()), int((m == 2).sum())
    for q, words in (("What is the yield?", "The yield is"), ("良率是多少？", "良率为")):
        assert main(["ask", "--model", str(wafer_model), "--image", str(tmp_path / "small.png"), "--json", q]) == 0
        v = json.loads(capsys.readouterr().out)
        assert v["answer"].startswith(words) and f"{100 * (n - f) / n:.1f}%" in v["answer"]
        assert {"defects", "confidence", "per_pattern", "abstain", "reason", "evidence", "facts"} <= set(v)
        assert len(v["per_pattern"]) == 8 and 0 <= v["confidence"] <= 1
        assert (v["facts"]["dies"], v["facts"]["failing"], v["facts"]["grid"]) == (n, f, list(m.shape))
    for extra in ([], ["--json"]):
        assert main(["ask", "--model", str(wafer_model), "--image", str(maps / "noise.png"), *extra,
                     "What is the yield?"]) == 0
        out = capsys.readouterr().out
        assert "does not look like a wafer map" in out and "yield is" not in out
    v = json.loads(out)
    assert v["abstain"] is True and v["reason"] == "out_of_domain" and v["facts"] == {}
