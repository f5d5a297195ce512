"""User mistakes: one clear line on stderr naming the file/record/field, exit 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainvlm import domains
from domainvlm.cli import main


def _run(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _good_npz(path, n=4):
    maps = np.ones((n, 52, 52), np.uint8)
    np.savez(path, arr_0=maps, arr_1=np.zeros((n, 8), np.uint8))


@pytest.mark.parametrize("case", ["corrupt", "values", "labels"])
def test_bad_npz_build(tmp_path, capsys, case):
    src = tmp_path / "bad.npz"
    if case == "corrupt":
        _good_npz(src)
        src.write_bytes(src.read_bytes()[:200])
    elif case == "values":
        maps = np.ones((3, 52, 52), np.uint8)
        maps[1, 5, 5] = 7
        np.savez(src, arr_0=maps, arr_1=np.zeros((3, 8), np.uint8))
    else:
        np.savez(src, arr_0=np.ones((3, 52, 52), np.uint8), arr_1=np.zeros((3, 7), np.uint8))
    out = tmp_path / "out"
    rc, err = _run(capsys, ["data", "build", "--source", str(src), "--out", str(out)])
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("domainvlm: error:") and "bad.npz" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_malformed_jsonl_line_in_eval_and_validate(tmp_path, capsys, tiny_model_dir):
    p = tmp_path / "d.jsonl"
    rec = {"id": "1", "images": [], "messages": [{"role": "user", "content": "q"},
                                                  {"role": "assistant", "content": "a"}],
           "labels": {"task": "wafer", "defects": []}}
    p.write_text(json.dumps(rec) + "\n" + '{"id": 2, "images": [\n')
    out = tmp_path / "m.json"
    rc, err = _run(capsys, ["eval", "--model", str(tiny_model_dir), "--data", str(p), "--out", str(out)])
    assert rc == 2 and len(err) == 1 and "d.jsonl:2: malformed JSON" in err[0]
    p.write_text(json.dumps(rec) + "\n" + '{"id": "3\tx"}\n')  # a raw tab inside a string
    rc, err = _run(capsys, ["eval", "--model", str(tiny_model_dir), "--data", str(p), "--out", str(out)])
    assert rc == 2 and err == ["domainvlm: error: " + str(p) + ":2: malformed JSON (Invalid control character, "
                               "column 10)"]
    assert not out.exists()
    rc, err = _run(capsys, ["data", "validate", str(p)])
    assert rc == 2 and "d.jsonl:2" in err[0]


def test_missing_image(tmp_path, capsys):
    p = tmp_path / "d.jsonl"
    rec = {"id": "r7", "images": ["nowhere.png"], "messages": [{"role": "user", "content": "<image>\nq"},
                                                              {"role": "assistant", "content": "a"}]}
    p.write_text(json.dumps(rec) + "\n")
    rc, err = _run(capsys, ["data", "validate", str(p)])
    assert rc == 2 and len(err) == 1
    assert "r7" in err[0] and "images[0]" in err[0] and "nowhere.png" in err[0] and "not found" in err[0]
    rc, err = _run(capsys, ["ask", "--image", str(tmp_path / "nope.png"), "hi", "--model", str(tmp_path)])
    assert rc == 2 and "nope.png: image not found" in err[0]


def test_not_an_image_and_bad_override(tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"hello, not a png")
    rc, err = _run(capsys, ["ask", "--image", str(junk), "hi"])
    assert rc == 2 and "junk.png: not a readable image" in err[0]
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    rc, err = _run(capsys, ["ask", "--image", str(tmp_path / "ok.png"), "<image> what?", "--model", str(tmp_path)])
    assert rc == 2 and err == ["domainvlm: error: question: may not contain the reserved token '<image>'"]
    rc, err = _run(capsys, ["ask", "--image", "https://example.com/map.png", "hi"])  # was 'https:/...: not found'
    assert rc == 2 and err == ["domainvlm: error: https://example.com/map.png: URLs are not fetched (nothing is "
                               "downloaded); save the image and pass the file"]
    _good_npz(tmp_path / "maps.npz")
    rc, err = _run(capsys, ["ask", "--image", str(tmp_path / "maps.npz"), "hi"])  # no map picked
    assert rc == 2 and len(err) == 1 and "maps.npz#N" in err[0] and "--index" in err[0]
    rc, err = _run(capsys, ["train", "data=x.jsonl", "max_steps=many"])
    assert rc == 2 and "max_steps" in err[0]


def test_subprocess_no_traceback(tmp_path):
    src = tmp_path / "bad.npz"
    src.write_bytes(b"PK\x03\x04garbage")
    r = subprocess.run([sys.executable, "-m", "domainvlm", "data", "build", "--source", str(src), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and "bad.npz" in r.stderr


def test_eval_image_root(tmp_path, capsys, tiny_model_dir):
    """Relative image paths resolve against --image-root; without it (or with a wrong one) one clear line."""
    from PIL import Image

    imgs = tmp_path / "pics"
    imgs.mkdir()
    Image.new("RGB", (52, 52), (0, 128, 0)).save(imgs / "m.png")
    p = tmp_path / "ann" / "d.jsonl"
    p.parent.mkdir()
    rec = {"id": "w1", "images": ["m.png"], "messages": [{"role": "user", "content": "<image>\nWhat defect?"},
                                                        {"role": "assistant", "content": "Diagnosis: Center."}],
           "labels": {"task": "wafer", "defects": ["Center"]}}
    p.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "m.json"
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(p), "--out", str(out), "--max-new-tokens", "4",
            "--quiet"]
    rc, err = _run(capsys, base)
    errors = [e for e in err if "error" in e]  # (stderr also carries the weight-loading progress bar)
    assert rc == 2 and len(errors) == 1 and "m.png: image not found" in errors[0] and not out.exists()
    rc, err = _run(capsys, base + ["--image-root", str(tmp_path / "nope")])
    assert rc == 2 and err == [f"domainvlm: error: --image-root {tmp_path / 'nope'}: not a folder"]
    assert not out.exists()
    assert main(base + ["--image-root", str(imgs)]) == 0
    assert json.loads(out.read_text())["n"] == 1


@pytest.mark.parametrize("argv, message", [
    (["ask", "--image", "x.png", "q", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1, got 0"),
    (["ask", "--image", "x.png", "q", "--temperature", "-1"], "--temperature: must be in [0, 2], got -1"),
    (["bench", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),  # was a ValueError traceback
    (["bench", "--threads", "two"], "--threads: expects an integer, got 'two'"),
    (["chat", "--top-p", "0"], "--top-p: must be in (0, 1], got 0"),
    (["eval", "--data", "d.jsonl", "--out", "m.json", "--limit", "0"], "--limit: must be at least 1, got 0"),
    (["predict", "in.csv", "--top-k", "-2"], "--top-k: must be 0 or more, got -2"),
    (["predict", "in.csv", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["serve", "--max-body-mb", "0"], "--max-body-mb: must be above 0, got 0"),
    (["serve", "--batch-wait-ms", "nan"], "--batch-wait-ms: must be 0 or more, got nan"),
    (["webui", "--max-new-tokens", "-5"], "--max-new-tokens: must be at least 1, got -5"),
    (["data", "synth", "--out", "s.npz", "--n", "0"], "--n: must be at least 1, got 0"),
])
def test_bad_numeric_options_stop_at_parse_time(tmp_path, capsys, monkeypatch, argv, message):
    """Checked by the option's type, before a model loads or a file is opened: one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    rc, err = _run(capsys, argv)
    assert rc == 2 and len(err) == 1, err
    prog = "domainvlm " + " ".join(argv[:2] if argv[0] == "data" else argv[:1])  # data has sub-commands
    assert err[0] == f"{prog}: error: argument {message} (see {prog} --help)", err
    assert "Traceback" not in "\n".join(err) and not any(tmp_path.iterdir())


_SCORED = ", ".join(sorted(d.name for d in domains.all_domains() if d.score))  # the tasks with metrics


@pytest.mark.parametrize("labels, says", [({}, f"records must all carry one labels.task, one of {_SCORED} (found None)"),
                                          ({"task": "vqa"}, "no metrics for labels.task 'vqa'")])
def test_eval_without_a_known_task_fails_before_generating(tmp_path, capsys, monkeypatch, labels, says):
    from PIL import Image

    from domainvlm.inference import engine

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"id": "1", "images": ["a.png"], "labels": labels, "messages": [
        {"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a"}]}) + "\n")
    monkeypatch.setattr(engine.Engine, "__init__", lambda *a, **k: pytest.fail("model loaded before the check"))
    rc, err = _run(capsys, ["eval", "--data", str(p), "--out", str(tmp_path / "m.json")])
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"domainvlm: error: {p}: {says}"), err
    assert not (tmp_path / "m.json").exists()


def test_empty_data_file_says_empty(tmp_path, capsys):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n  \n")
    for argv in (["data", "validate", str(p)], ["eval", "--data", str(p), "--out", str(tmp_path / "m.json")]):
        rc, err = _run(capsys, argv)
        assert rc == 2 and err == [f"domainvlm: error: {p}: empty file (no records)"], err


def test_train_with_unlabelled_val_and_task_metric_fails_before_training(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    rec = {"id": "1", "images": ["a.png"], "messages": [{"role": "user", "content": "<image>\nq"},
                                                        {"role": "assistant", "content": "a"}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(rec) + "\n")
    out = tmp_path / "run"
    argv = ["train", f"data={tmp_path / 'd.jsonl'}", f"val_data={tmp_path / 'd.jsonl'}", f"output_dir={out}",
            "max_steps=1", "compact.layers=1", "compact.hidden=32", "compact.heads=2", "compact.kv_heads=1"]
    rc, err = _run(capsys, argv)
    assert rc == 2 and len(err) == 1 and "d.jsonl: records must all carry one labels.task" in err[0], err
    assert "eval_samples=0" in err[0] and not out.exists()


def test_train_with_val_data_of_another_task_fails_before_training(tmp_path, capsys):
    """Report train data with classify val data trained and selected on unparsed_rate 1.0, rc 0."""
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")

    def rec(task, answer):
        return json.dumps({"id": "1", "images": ["a.png"], "labels": {"task": task, "labels": ["x"]},
                           "messages": [{"role": "user", "content": "<image>\nq"},
                                        {"role": "assistant", "content": answer}]}) + "\n"
    (tmp_path / "t.jsonl").write_text(rec("report", "No acute disease."))
    (tmp_path / "v.jsonl").write_text(rec("classify", "Class: x"))
    out = tmp_path / "run"
    argv = ["train", f"data={tmp_path / 't.jsonl'}", f"val_data={tmp_path / 'v.jsonl'}", f"output_dir={out}",
            "max_steps=1", "compact.layers=1", "compact.hidden=32", "compact.heads=2", "compact.kv_heads=1"]
    rc, err = _run(capsys, argv)
    assert rc == 2 and len(err) == 1 and "v.jsonl: val records of task classify" in err[0], err
    assert "its tasks: report" in err[0] and not out.exists()


def test_export_over_its_own_input_is_refused(tmp_path, capsys):
    src = tmp_path / "train.jsonl"
    rec = {"id": "1", "images": [], "messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "a"}],
           "labels": {"task": "report", "report": "a"}, "meta": {"split": "train"}}
    src.write_text(json.dumps(rec) + "\n")
    before = src.read_bytes()
    rc, err = _run(capsys, ["data", "export", str(src), "--format", "sharegpt", "--out", str(src)])
    assert rc == 2 and len(err) == 1 and "must differ from the input file" in err[0]
    assert src.read_bytes() == before  # the records (labels, meta) are not replaced by sharegpt rows


def test_rebuild_into_a_folder_with_other_split_files_is_refused(tmp_path, capsys):
    """A second build (train only) into the first's --out left its val.jsonl beside the new train.jsonl."""
    src = tmp_path / "maps.npz"
    _good_npz(src, n=20)
    out = tmp_path / "d"
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--val-fraction", "0.3"]) == 0
    assert (out / "val.jsonl").exists()
    before = (out / "train.jsonl").read_text()
    capsys.readouterr()
    rc, err = _run(capsys, ["data", "build", "--source", str(src), "--out", str(out)])  # all.jsonl only
    assert rc == 2 and len(err) == 1 and "train.jsonl, val.jsonl from an earlier build" in err[0], err
    assert (out / "train.jsonl").read_text() == before and not (out / "all.jsonl").exists()
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--val-fraction", "0.3"]) == 0  # same
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--split", "val",
                 "--val-fraction", "0.3"]) == 0  # a subset on purpose


@pytest.mark.parametrize("fmt", ["sharegpt", "llava"])
def test_export_draws_map_references_as_pngs_trainers_can_open(tmp_path, capsys, fmt):
    """npz#K / FILE#K references went into the export as they were: LLaMA-Factory and LLaVA open files with PIL."""
    src = tmp_path / "maps.npz"
    _good_npz(src, n=3)
    d = tmp_path / "d"
    assert main(["data", "build", "--source", str(src), "--out", str(d), "--langs", "en"]) == 0
    out = tmp_path / "x" / "train.json"
    assert main(["data", "export", str(d / "all.jsonl"), "--format", fmt, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    refs = [x for r in rows for x in (r["images"] if fmt == "sharegpt" else [r["image"]])]
    assert len(refs) == 3 and all("#" not in x and x.endswith(".png") for x in refs), refs
    pics = [Image.open(out.parent / x) for x in refs]
    assert all(p.format == "PNG" and min(p.size) >= 52 for p in pics)  # a 52 x 52 map, drawn
    assert sorted(p.name for p in (out.parent / "train_images").iterdir()) == sorted(Path(x).name for x in refs)
    keep = tmp_path / "keep.json"
    assert main(["data", "export", str(d / "all.jsonl"), "--format", fmt, "--out", str(keep), "--keep-refs"]) == 0
    assert all("#" in json.dumps(r) for r in json.loads(keep.read_text()))


def test_build_warns_of_records_whose_images_are_missing(tmp_path, capsys):
    """R2Gen's annotation built 2,955 records of absent images in silence; training stopped at the first later."""
    Image.new("RGB", (16, 16)).save(tmp_path / "here.png")
    turns = [{"from": "human", "value": "<image>Describe."}, {"from": "gpt", "value": "Ok."}]
    (tmp_path / "s.json").write_text(json.dumps([{"conversations": turns, "images": [x]}
                                                 for x in ("here.png", "gone.png", "gone.png")]))
    assert main(["data", "build", "--source", str(tmp_path / "s.json"), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert "2 of 3 record(s) name an image that does not exist" in err and "gone.png" in err
    assert (tmp_path / "d" / "all.jsonl").exists()  # said, not refused: --image-root may come later


def test_unreadable_non_image_files_and_two_indices_are_named(tmp_path, capsys):
    """An empty or text 'lot.xml' said "not a readable image (UnidentifiedImageError ...)"; 'x#1 --index 2'
    said 'image not found'."""
    (tmp_path / "empty.xml").write_bytes(b"")
    (tmp_path / "notes.stdf").write_text("hello\n")
    for name, says in (("empty.xml", "empty file"), ("notes.stdf", "neither an image nor a file a domain reads")):
        rc, err = _run(capsys, ["ask", "--image", str(tmp_path / name), "What is this?"])
        assert rc == 2 and len(err) == 1 and str(tmp_path / name) in err[0] and says in err[0], err
    src = tmp_path / "maps.npz"
    _good_npz(src)
    rc, err = _run(capsys, ["ask", "--image", f"{src}#1", "--index", "2", "What is this?"])
    assert rc == 2 and len(err) == 1 and "--index 2" in err[0] and "give one of the two" in err[0], err


def test_train_no_progress_hides_transformers_bars_too(tmp_path, capfd):
    """--no-progress still printed transformers' 'Writing model shards' / 'Loading weights' bars."""
    from transformers.utils import logging as hf_logging

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    rec = {"id": "1", "images": ["a.png"], "messages": [{"role": "user", "content": "<image>\nq"},
                                                        {"role": "assistant", "content": "a"}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(rec) + "\n")
    argv = ["train", f"data={tmp_path / 'd.jsonl'}", f"output_dir={tmp_path / 'run'}", "max_steps=1",
            "eval_samples=0", "compact.layers=1", "compact.hidden=32", "compact.heads=2", "compact.kv_heads=1",
            "--no-progress"]
    was = hf_logging.is_progress_bar_enabled()
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "Loading weights" not in err, err[-500:]
    assert hf_logging.is_progress_bar_enabled() == was  # restored for what runs next in this process
