"""`domainvlm predict`: folder / CSV / JSONL in, JSONL / CSV out, per-row errors, resume after interruption."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from domainvlm.cli import main
from domainvlm.inference.engine import Engine, Sampling

N = 5
Q = "What defect pattern does this wafer map show?"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(tiny_model_dir)


def make_images(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = (np.random.default_rng(i).random((24 + 4 * i, 30, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(folder / f"m{i}.png")
    return sorted(folder.glob("*.png"))


def want(engine, image_path, q=Q):
    msgs = [{"role": "user", "content": f"<image>\n{q}" if image_path else q}]
    imgs = [Image.open(image_path).convert("RGB")] if image_path else []
    return engine.generate([(msgs, imgs)], Sampling(max_new_tokens=N))[0]


def run(*argv, model):
    return main(["predict", *map(str, argv), "--model", str(model), "--max-new-tokens", str(N), "--no-progress"])


def read_jsonl(p):
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_csv_in_csv_out_with_per_row_errors(tmp_path, tiny_model_dir, engine, capsys):
    imgs = make_images(tmp_path / "img")
    (tmp_path / "img" / "junk.png").write_bytes(b"not a png")
    src = tmp_path / "in.csv"
    src.write_text("id,image,question\n"
                   f"a,img/m0.png,{Q}\n"          # relative to the CSV's folder
                   f"b,{imgs[1]},Is it normal?\n"
                   "c,img/missing.png,hi\n"
                   "d,img/junk.png,hi\n"
                   "e,,text only question\n"
                   "f,img/m2.png,\n")           # no question and no --question
    out = tmp_path / "out.csv"
    assert run(src, "-o", out, "--batch-size", "2", model=tiny_model_dir) == 1
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == list("abcdef")
    assert rows["a"]["answer"] == want(engine, imgs[0]) and not rows["a"]["error"]
    assert rows["b"]["answer"] == want(engine, imgs[1], "Is it normal?")
    assert rows["e"]["answer"] == want(engine, None, "text only question")
    assert "in.csv:4" in rows["c"]["error"] and "image not found" in rows["c"]["error"]
    assert "not a readable image" in rows["d"]["error"] and not rows["d"]["answer"]
    assert "in.csv:7: field 'question'" in rows["f"]["error"]
    assert "3 row(s) failed" in capsys.readouterr().err


def test_folder_in_jsonl_out_batched(tmp_path, tiny_model_dir, engine):
    imgs = make_images(tmp_path / "maps")
    out = tmp_path / "res.jsonl"
    assert run(tmp_path / "maps", "-q", Q, "-o", out, "--batch-size", "3", model=tiny_model_dir) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [p.name for p in imgs]
    assert [r["answer"] for r in rows] == [want(engine, p) for p in imgs]
    assert all(r["error"] is None for r in rows)


def test_jsonl_simple_and_record_rows(tmp_path, tiny_model_dir, engine):
    imgs = make_images(tmp_path / "i", 2)
    rec = {"id": "r1", "images": ["i/m1.png"], "messages": [{"role": "user", "content": f"<image>\n{Q}"},
                                                             {"role": "assistant", "content": "Center."}]}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"image": "i/m0.png", "question": Q}) + "\n" + json.dumps(rec) + "\n"
                   + '{"image": "i/m0.png", "question": \n'
                   + json.dumps({"id": "r2", "images": [], "messages": [{"role": "user", "content": "<image>x"}]})
                   + "\n")
    out = tmp_path / "out.jsonl"
    assert run(src, "-o", out, model=tiny_model_dir) == 1
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["1"]["answer"] == want(engine, imgs[0])
    assert rows["r1"]["answer"] == want(engine, imgs[1]) and rows["r1"]["reference"] == "Center."
    assert "in.jsonl:3: malformed JSON" in rows["3"]["error"]
    assert "in.jsonl:4" in rows["r2"]["error"] and "placeholder" in rows["r2"]["error"]


def test_resume_after_interruption_skips_done_rows(tmp_path, tiny_model_dir, monkeypatch):
    make_images(tmp_path / "maps", 5)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert run(tmp_path / "maps", "-q", Q, "-o", full, "--batch-size", "2", model=tiny_model_dir) == 0
    real, calls, interrupt = Engine.generate, [], [True]

    def interrupted_on_second_batch(self, convs, sampling=None):
        calls.append(len(convs))
        if len(calls) == 2 and interrupt and interrupt.pop():
            raise KeyboardInterrupt
        return real(self, convs, sampling)

    monkeypatch.setattr(Engine, "generate", interrupted_on_second_batch)
    assert run(tmp_path / "maps", "-q", Q, "-o", part, "--batch-size", "2", model=tiny_model_dir) == 130
    done = calls[0]  # batches of 5 rows at --batch-size 2 are as even as can be: 1, 2, 2
    assert len(read_jsonl(part)) == done > 0  # the first batch survived the interruption
    with part.open("a") as fh:
        fh.write(f'{{"id": "m{done}.png", "answ')  # a kill in the middle of writing a line
    calls.clear()
    assert run(tmp_path / "maps", "-q", Q, "-o", part, "--batch-size", "2", model=tiny_model_dir) == 0
    assert sum(calls) == 5 - done  # only the missing rows were generated
    assert read_jsonl(part) == read_jsonl(full)
    calls.clear()
    assert run(tmp_path / "maps", "-q", Q, "-o", part, model=tiny_model_dir) == 0 and calls == []


def _csv_input(tmp_path, n_images: int, *rows: str):
    """n_images maps under maps/ and an image,question CSV of the given rows."""
    make_images(tmp_path / "maps", n_images)
    src = tmp_path / "in.csv"
    src.write_text("image,question\n" + "".join(r + "\n" for r in rows))
    return src


def test_question_with_the_image_token_is_a_row_error(tmp_path, tiny_model_dir):
    src = _csv_input(tmp_path, 1, f"maps/m0.png,<image> {Q}", f"maps/m0.png,{Q}")
    out = tmp_path / "o.jsonl"
    assert run(src, "-o", out, model=tiny_model_dir) == 1
    bad, good = read_jsonl(out)
    assert bad["error"] == f"{src}:2: field 'question': may not contain the reserved token '<image>'"
    assert good["error"] is None and good["answer"]


def test_resume_with_another_question_is_refused(tmp_path, tiny_model_dir, capsys):
    make_images(tmp_path / "maps", 2)
    out = tmp_path / "o.jsonl"
    assert run(tmp_path / "maps", "-q", Q, "-o", out, model=tiny_model_dir) == 0
    before = out.read_text()
    capsys.readouterr()
    assert run(tmp_path / "maps", "-q", "这是什么缺陷？", "-o", out, model=tiny_model_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'m0.png'" in err[0] and "--overwrite" in err[0]
    assert out.read_text() == before  # the old answers are kept, none is passed off as the new question's
    assert run(tmp_path / "maps", "-q", "这是什么缺陷？", "-o", out, "--overwrite", model=tiny_model_dir) == 0
    assert {r["question"] for r in read_jsonl(out)} == {"这是什么缺陷？"}


def test_resume_with_other_images_under_the_same_ids_is_refused(tmp_path, tiny_model_dir, capsys):
    """A CSV's row ids are its line numbers: an edited input that puts another image on a line must not be
    answered with the old image's answer."""
    make_images(tmp_path / "maps", 2)
    out = tmp_path / "o.jsonl"
    assert run(_csv_input(tmp_path, 2, f"maps/m0.png,{Q}"), "-o", out, model=tiny_model_dir) == 0
    before = out.read_text()
    capsys.readouterr()
    assert run(_csv_input(tmp_path, 2, f"maps/m1.png,{Q}"), "-o", out, model=tiny_model_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m0.png" in err[0] and "m1.png" in err[0] and "--overwrite" in err[0], err
    assert out.read_text() == before
    assert run(_csv_input(tmp_path, 2, f"maps/m0.png,{Q}"), "-o", out, model=tiny_model_dir) == 0  # same: resumes


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_with_another_model_is_refused(tmp_path, tiny_model_dir, capsys, fmt):
    """Rerun into the same file with another --model, the first model's answers passed as the second's."""
    import shutil

    make_images(tmp_path / "maps", 2)
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    out = tmp_path / f"o.{fmt}"
    assert run(tmp_path / "maps", "-q", Q, "-o", out, model=tiny_model_dir) == 0
    before = out.read_text()
    capsys.readouterr()
    assert run(tmp_path / "maps", "-q", Q, "-o", out, model=other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(other.resolve()) in err[0] and "--overwrite" in err[0], err
    assert out.read_text() == before
    assert run(tmp_path / "maps", "-q", Q, "-o", out, model=tiny_model_dir) == 0  # the same model resumes
    assert run(tmp_path / "maps", "-q", Q, "-o", out, "--overwrite", model=other) == 0
    rows = read_jsonl(out) if fmt == "jsonl" else list(csv.DictReader(out.open()))
    assert {r["model"] for r in rows} == {str(other.resolve())}


def test_retry_errors_and_overwrite(tmp_path, tiny_model_dir):
    src = _csv_input(tmp_path, 2, f"maps/m0.png,{Q}", f"maps/late.png,{Q}")
    out = tmp_path / "o.jsonl"
    assert run(src, "-o", out, model=tiny_model_dir) == 1
    (tmp_path / "maps" / "late.png").write_bytes((tmp_path / "maps" / "m1.png").read_bytes())  # it appears
    assert run(src, "-o", out, model=tiny_model_dir) == 1  # plain resume keeps the recorded error
    assert run(src, "-o", out, "--retry-errors", model=tiny_model_dir) == 0
    assert [r["error"] for r in read_jsonl(out)] == [None, None]
    assert run(src, "-o", out, "--overwrite", model=tiny_model_dir) == 0 and len(read_jsonl(out)) == 2


@pytest.mark.parametrize("setup, argv, msg", [
    (lambda d: (d / "x.csv").write_text("file_name,q\na.png,hi\n"), ["x.csv"], "x.csv:1: no image column"),
    (lambda d: (d / "x.csv").write_text("id,image,question\n1,a.png,hi\n1,b.png,hi\n"), ["x.csv"],
     "field 'id': duplicate id '1'"),
    (lambda d: (d / "x.txt").write_text("hi"), ["x.txt"], "expected a folder of images, a .csv or a .jsonl"),
    (lambda d: (d / "f").mkdir(), ["f"], "needs --question"),
    (lambda d: None, ["nothere.jsonl"], "no such file"),
    (lambda d: ((d / "x.csv").write_text("image,question\na.png,hi\n"), (d / "o.jsonl").write_text("[1]\n")),
     ["x.csv", "-o", "o.jsonl"], "o.jsonl:1: exists but is not a predictions file"),
    (lambda d: ((d / "x.csv").write_text("image,question\na.png,hi\n"), (d / "o.jsonl").mkdir()),
     ["x.csv", "-o", "o.jsonl"], "o.jsonl: is a folder"),
])
def test_bad_input_files_fail_in_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch, setup, argv, msg):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    assert run(*argv, model=tiny_model_dir) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1, err


def test_without_question_a_head_model_asks_its_own(tmp_path, tiny_model_dir, tiny_wafer_head_dir, capsys):
    """A folder or map file needs one question for all: a model with an answer head has its own (the wafer
    expert's diagnosis question), said on stderr; a model without one still needs --question."""
    from domainvlm.domains import default_question
    from domainvlm.models.loader import answer_head_name

    asked = lambda d: default_question(answer_head_name(d))  # noqa: E731
    assert asked(tiny_wafer_head_dir) == Q and asked(tiny_model_dir) is None and asked(tmp_path / "nothere") is None
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_wafer_head_dir)}))
    assert asked(adapter) == Q  # a LoRA adapter: its base's head
    make_images(tmp_path / "maps", 2)
    out = tmp_path / "o.jsonl"
    assert run(tmp_path / "maps", "-o", out, model=tiny_wafer_head_dir) == 0
    assert f"asking every input {Q!r} (the model's default question" in capsys.readouterr().err
    assert [r["question"] for r in read_jsonl(out)] == [Q, Q]
    assert run(tmp_path / "maps", "-o", tmp_path / "p.jsonl", model=tiny_model_dir) == 2
    assert "needs --question" in capsys.readouterr().err
    img = str(tmp_path / "maps" / "m0.png")
    assert main(["ask", "--image", img, "--model", str(tiny_wafer_head_dir)]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["ask", "--image", img, "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["domainvlm: error: question: missing (this model has no answer head with a default question)"]


@pytest.mark.parametrize("case", ["no config.json", "config.json bad", "a file", "adapter base gone"])
def test_without_question_an_unreadable_model_says_why_not_no_head(tmp_path, tiny_model_dir, case, capsys):
    """The default question is read from the model folder: one that cannot be read is reported as such (as
    with a question), not as "this model has no answer head"."""
    import shutil

    img = str(make_images(tmp_path / "maps", 1)[0])
    m = tmp_path / "m"
    shutil.copytree(tiny_model_dir, m)
    if case == "no config.json":
        (m / "config.json").unlink()
        want = f"{m}: no config.json"
    elif case == "config.json bad":
        (m / "config.json").write_text("{bad")
        want = f"{m / 'config.json'}: malformed JSON"
    elif case == "a file":
        m, want = m / "model.safetensors", f"{m / 'model.safetensors'}: a file, not a model folder"
    else:
        shutil.rmtree(m)
        m.mkdir()
        (m / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
        want = f"base model directory {tmp_path / 'gone'} not found"
    for argv in (["ask", "--image", img, "--model", str(m)], ["predict", str(tmp_path / "maps"), "--model", str(m)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and want in err[0] and "answer head" not in err[0], err


def test_folder_skips_what_os_zip_tools_and_nases_add(tmp_path, tiny_model_dir, capsys):
    """macOS ._x AppleDouble files and __MACOSX/, Synology @eaDir/ thumbnails (real JPEGs), Thumbs.db,
    desktop.ini and dot-files are no inputs: no row (an error row, or an answer about a thumbnail), no warning."""
    from domainvlm.webui.app import example_images

    imgs = make_images(tmp_path / "maps", 2)
    junk = tmp_path / "maps"
    (junk / "._m0.png").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X        ")
    (junk / "__MACOSX").mkdir()
    (junk / "__MACOSX" / "._m1.png").write_bytes(b"\0\5\26\7 AppleDouble")
    (junk / "@eaDir" / "m0.png").mkdir(parents=True)
    Image.open(imgs[0]).convert("RGB").save(junk / "@eaDir" / "m0.png" / "SYNOFILE_THUMB_XL.jpg")
    Image.open(imgs[1]).save(junk / ".hidden.png")
    (junk / ".thumbnails").mkdir()
    Image.open(imgs[1]).save(junk / ".thumbnails" / "t.png")
    for name in ("Thumbs.db", "desktop.ini", ".DS_Store"):
        (junk / name).write_bytes(b"\0junk")
    out = tmp_path / "res.jsonl"
    assert run(junk, "-q", Q, "-o", out, model=tiny_model_dir) == 0
    assert [r["id"] for r in read_jsonl(out)] == ["m0.png", "m1.png"]
    assert "skipped" not in capsys.readouterr().err
    assert example_images(junk) == [str(p) for p in imgs]  # the web UI's example strip the same
    (junk / "notes.txt").write_text("x")  # anything else is still said
    assert run(junk, "-q", Q, "-o", out, model=tiny_model_dir) == 0
    assert "1 entry skipped" in capsys.readouterr().err
