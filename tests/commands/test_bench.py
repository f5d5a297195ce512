"""`domainvlm bench` prints a table and writes JSON (tiny untrained model with the wafer head)."""

from __future__ import annotations

import json
import shutil


def test_bench_cpu_table_and_json(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from domainvlm.cli import main

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # bench's own default, 2 threads
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.setdefault("domainvlm", {})["answer_head"] = "wafer-diagnosis"
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "b.json"
    assert main(["bench", "--model", str(d), "--runs", "3", "--batch-size", "2", "--maps", "4",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["threads"] == 2 and res["device"] == "cpu"
    lat, thr = res["rows"]
    assert lat["p50_ms"] > 0 and lat["p95_ms"] >= lat["p50_ms"] and thr["maps_per_s"] > 0
    assert "latency, batch 1" in capsys.readouterr().err
    # a shell's OMP_NUM_THREADS holds (it ran 2 threads under OMP_NUM_THREADS=1); --threads still wins
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["bench", "--model", str(d), "--runs", "2", "--batch-size", "2", "--maps", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["threads"] == 1
    assert main(["bench", "--model", str(d), "--runs", "2", "--batch-size", "2", "--maps", "2", "--threads", "2",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["threads"] == 2


def test_bench_refuses_cuda_without_gpu(capsys):
    import torch

    from domainvlm.cli import main

    if torch.cuda.is_available():
        return
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_host_time_bench_prints_every_stage():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "bench" / "wafer_host_time.py"), "--maps", "64", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("canonical_image", "PIL -> uint8 array", "patchify (CPU)", "patch embedding (CPU)"):
        row = next(line for line in r.stdout.splitlines() if stage in line)
        assert len([c for c in row.split("│") if c.strip()]) == 4, row  # stage + three numbers
    assert "host time for 64 maps" in r.stdout


def test_bench_confidence_switch(tiny_model_dir, tmp_path):
    from domainvlm.cli import main

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.setdefault("domainvlm", {})["answer_head"] = "wafer-diagnosis"
    (d / "config.json").write_text(json.dumps(cfg))
    for flag, want in (("--confidence", True), ("--no-confidence", False)):
        out = tmp_path / f"b{want}.json"
        assert main(["bench", "--model", str(d), "--runs", "2", "--batch-size", "2", "--maps", "2", flag,
                     "--out", str(out)]) == 0
        assert json.loads(out.read_text())["confidence"] is want
