"""Text files that are not UTF-8 and paths that are symlink loops: one line naming the file (and line), exit 2,
no traceback, for every command that reads them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from domainvlm.cli import main

REC = {"id": "1", "images": [], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
       "labels": {"task": "wafer", "defects": []}}


def _run(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def bad_jsonl(tmp_path):
    p = tmp_path / "bad.jsonl"
    line2 = json.dumps({**REC, "id": "2"}).encode().replace(b'"q"', b'"q\xff"')  # Latin-1 export, say
    p.write_bytes(json.dumps(REC).encode() + b"\n" + line2 + b"\n")
    return p


def test_non_utf8_jsonl_names_file_and_line(bad_jsonl, tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "out"
    for argv in (["data", "validate", str(bad_jsonl)],
                 ["data", "build", "--source", str(bad_jsonl), "--out", str(out)],
                 ["data", "export", str(bad_jsonl), "--format", "sharegpt", "--out", str(out / "x.json")],
                 ["eval", "--model", str(tiny_model_dir), "--data", str(bad_jsonl), "--out", str(out / "m.json")],
                 ["predict", str(bad_jsonl), "--model", str(tiny_model_dir), "-o", str(out / "p.jsonl")],
                 ["train", f"data={bad_jsonl}", f"output_dir={out / 'run'}", "max_steps=1"]):
        rc, err = _run(capsys, argv)
        assert rc == 2 and len(err) == 1, (argv, err)
        assert "bad.jsonl:2: not UTF-8 text (byte 0xff at column" in err[0], (argv, err)
    assert not out.exists() or not any(out.rglob("*"))


def test_non_utf8_csv_and_yaml(tmp_path, capsys, tiny_model_dir):
    csv = tmp_path / "q.csv"
    csv.write_bytes(b"image,question\nx.png,what\n\xe9t\xe9.png,q\n")
    rc, err = _run(capsys, ["predict", str(csv), "--model", str(tiny_model_dir), "-o", str(tmp_path / "p.csv")])
    assert rc == 2 and len(err) == 1 and "q.csv:3: not UTF-8 text (byte 0xe9 at column 1)" in err[0]
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"data: x.jsonl\n# r\xe9sum\xe9\n")
    rc, err = _run(capsys, ["train", "--config", str(cfg)])
    assert rc == 2 and len(err) == 1 and "c.yaml:2: not UTF-8" in err[0]


def test_utf8_bom_is_accepted(tmp_path, capsys):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(REC).encode() + b"\n")
    rc, err = _run(capsys, ["data", "validate", str(p)])
    assert rc == 0, err


def test_symlink_loop_is_one_line(tmp_path, tiny_model_dir):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    loop = str(tmp_path / "a")
    for argv in (["data", "validate", loop], ["data", "build", "--source", loop, "--out", str(tmp_path / "o")],
                 ["eval", "--model", str(tiny_model_dir), "--data", loop, "--out", str(tmp_path / "m.json")]):
        r = subprocess.run([sys.executable, "-m", "domainvlm", *argv], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and "a: cannot be resolved (a symlink loop" in r.stderr


def test_predict_on_empty_input_fails_and_a_folder_says_what_it_skipped(tmp_path, capsys, tiny_model_dir):
    from PIL import Image

    for name, text in (("e.jsonl", ""), ("e.csv", "image,question\n")):
        (tmp_path / name).write_text(text)
        rc, err = _run(capsys, ["predict", str(tmp_path / name), "--model", str(tiny_model_dir),
                                "-o", str(tmp_path / f"out_{name}")])
        assert rc == 2 and len(err) == 1 and "no rows to answer" in err[0], err
        assert not (tmp_path / f"out_{name}").exists()
    d = tmp_path / "maps"
    d.mkdir()
    Image.new("RGB", (32, 32)).save(d / "a.png")
    (d / "notes.txt").write_text("hi")
    (d / "gone.png").symlink_to(d / "nowhere.png")
    rc, err = _run(capsys, ["predict", str(d), "-q", "What defect?", "--model", str(tiny_model_dir),
                            "-o", str(tmp_path / "f.jsonl"), "--no-progress", "--max-new-tokens", "4"])
    assert rc == 0 and any("2 entries skipped" in e for e in err), err
