"""One unreadable image does not sink a whole `eval`: its record is named, counted as wrong, the run finishes."""

from __future__ import annotations

import json

from PIL import Image

from domainvlm.cli import main


def _rec(i: int, image: str) -> dict:
    return {"id": f"w{i}", "images": [image], "labels": {"task": "wafer", "defects": ["Center"]},
            "messages": [{"role": "user", "content": "<image>\nWhat defect?"},
                         {"role": "assistant", "content": "Diagnosis: Center."}]}


def test_eval_counts_a_truncated_image_as_an_error_and_finishes(tmp_path, capsys, tiny_model_dir):
    for i in range(3):
        Image.new("RGB", (52, 52), (0, 40 * i, 0)).save(tmp_path / f"m{i}.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "m0.png").read_bytes()[:60])  # truncated PNG
    data = tmp_path / "d.jsonl"
    refs = ["m0.png", "cut.png", "m1.png", "m2.png"]
    data.write_text("".join(json.dumps(_rec(i, ref)) + "\n" for i, ref in enumerate(refs)))
    out, preds = tmp_path / "m.json", tmp_path / "p.jsonl"
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--quiet",
               "--max-new-tokens", "4", "--batch-size", "2", "--predictions", str(preds)])
    err = capsys.readouterr().err
    assert rc == 1 and "record w1:" in err and "cut.png" in err and "1 record(s) could not be read" in err
    m = json.loads(out.read_text())
    assert m["n"] == 4 and len(m["errors"]) == 1 and m["errors"][0].startswith("record w1: ")
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["w0", "w1", "w2", "w3"]
    assert rows[1]["answer"] == "" and "cut.png" in rows[1]["error"] and all("error" not in rows[k] for k in (0, 2, 3))


def test_no_image_found_is_said_before_the_model_loads_with_the_right_count(tmp_path, capsys, monkeypatch,
                                                                           tiny_model_dir):
    """A wrong image root: every record's file is missing. One line naming the first, counting the others
    (n - 1 of them), and the model is never loaded."""
    import domainvlm.commands.eval as ev

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(_rec(i, f"gone{i}.png")) + "\n" for i in range(3)))
    monkeypatch.setattr(ev, "engine_from_args", lambda a: (_ for _ in ()).throw(AssertionError("model loaded")))
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"domainvlm: error: record w0: {tmp_path / 'gone0.png'}: image not found "
                   "(and all 2 other records' images)"]
    assert not out.exists()


def test_no_image_readable_after_the_run_counts_the_others_right(tmp_path, capsys, tiny_model_dir):
    """Files there but none readable (all cut short): found only by reading them, the same count."""
    data = tmp_path / "d.jsonl"
    for i in range(3):
        (tmp_path / f"cut{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    data.write_text("".join(json.dumps(_rec(i, f"cut{i}.png")) + "\n" for i in range(3)))
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "m.json"),
               "--quiet", "--max-new-tokens", "4"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("domainvlm")]  # not the load bar
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"domainvlm: error: record w0: {tmp_path / 'cut0.png'}")
    assert err[0].endswith("(and all 2 other records' images)")
