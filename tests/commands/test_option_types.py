"""--device, output-file and share options are checked at parse time: one line naming the option, exit 2, before
a model loads. (--device gpu was a torch RuntimeError traceback once the model loaded; bench --out DIR and
calibrate --scores DIR failed only after the whole run; --max-abstain 2 / --max-reject 1.5 were accepted.)"""

from __future__ import annotations

import pytest

from domainvlm.cli import main


@pytest.mark.parametrize("argv, message", [
    (["bench", "--device", "gpu"], "--device: expects cpu, cuda or cuda:N, got 'gpu'"),
    (["ask", "--image", "x.png", "q", "--device", "cuda:x"], "--device: expects cpu, cuda or cuda:N, got 'cuda:x'"),
    (["bench", "--out", "adir"], "--out: adir is a folder; give a file name"),
    (["bench", "--out", "afile/r.json"], "--out: afile/r.json: afile is a file, not a folder"),
    (["calibrate", "--data", "d.jsonl", "--scores", "adir"], "--scores: adir is a folder; give a file name"),
    (["calibrate", "--data", "d.jsonl", "--max-abstain", "2"], "--max-abstain: must be in [0, 1], got 2"),
    (["calibrate", "--data", "d.jsonl", "--max-reject", "1.5"], "--max-reject: must be in [0, 1], got 1.5"),
])
def test_bad_option_stops_at_parse_time(tmp_path, capsys, monkeypatch, argv, message):
    from domainvlm.inference import engine

    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(engine.Engine, "__init__", lambda *a, **k: pytest.fail("model loaded before the check"))
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    prog = f"domainvlm {argv[0]}"
    assert rc == 2 and err == [f"{prog}: error: argument {message} (see {prog} --help)"], err


@pytest.mark.parametrize("ok", ["cpu", "cuda", "cuda:1", "mps"])
def test_device_names_torch_knows_pass(ok):
    from domainvlm.commands._args import device_name

    assert device_name(ok) == ok
