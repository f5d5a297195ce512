"""`domainvlm export --out` may not be, or hold, its own adapter or base: with --force the merged folder was
swapped in over it, deleting the input (``--out .`` replaced the working folder). A file there was a
NotADirectoryError traceback. All are refused before any model loads."""

from __future__ import annotations

import json

import pytest

from domainvlm.cli import main


@pytest.fixture
def folders(tmp_path, monkeypatch):
    from domainvlm.models import export

    monkeypatch.setattr(export, "export_merged", lambda *a, **k: pytest.fail("export ran past the --out check"))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "runs" / "adapter").mkdir(parents=True)
    (tmp_path / "runs" / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "base")}))
    (tmp_path / "a.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("out, says", [
    ("runs/adapter", "--out runs/adapter: is the adapter folder runs/adapter; write the merged model elsewhere"),
    (".", "--out .: holds the adapter folder runs/adapter;"),
    ("runs", "--out runs: holds the adapter folder runs/adapter;"),
    ("base", "--out base: is the base folder "),
    ("a.txt", "--out a.txt: exists and is not a folder"),
])
def test_out_over_an_input_is_refused(folders, capsys, out, says):
    rc = main(["export", "runs/adapter", "--out", out, "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0], err
    assert (folders / "runs" / "adapter" / "adapter_config.json").exists() and (folders / "base").is_dir()


def test_out_elsewhere_reaches_the_export(folders, monkeypatch, capsys):
    from domainvlm.models import export

    seen = {}
    monkeypatch.setattr(export, "export_merged", lambda a, o, **k: seen.update(out=o) or {"out": o})
    assert main(["export", "runs/adapter", "--out", "merged"]) == 0 and seen == {"out": "merged"}
