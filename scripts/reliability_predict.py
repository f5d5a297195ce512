"""SIGKILL during `domainvlm predict`, then the same command again (it resumes by default): after three kills
and a last full rerun every input must have exactly one row, equal to the row of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reliability_common import Tally

N, KILLS = 200, 3


def _inputs(d: Path) -> Path:
    """N wafer maps (one npz, referenced as file#i) with a diagnosis question each."""
    from domainvlm.domains.wafer.npz_writers import save_wm811k_npz
    from domainvlm.domains.wafer.sources import WaferSet

    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:30, :30] - 14.5
    disc = yy ** 2 + xx ** 2 < 14 ** 2
    maps = [np.where(disc, 1 + (rng.random((30, 30)) < 0.05 + 0.2 * (i % 3 == 0)), 0).astype(np.uint8)
            for i in range(N)]
    save_wm811k_npz(WaferSet(maps, [()] * N, None, "wm811k", "wm811k", "x"), d / "maps.npz")
    rows = [{"id": f"w{i}", "image": f"maps.npz#{i}", "question": "Diagnose this wafer map."} for i in range(N)]
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "in.jsonl"


def _cmd(inp: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "domainvlm", "predict", str(inp), "-o", str(out), "--batch-size", "8",
            "--no-progress"]


def _rows(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]


def run_predict_resume(t: Tally, root: Path) -> None:
    inp = _inputs(root / "predict-data")
    log = open(root / "predict.log", "w")
    t0 = time.perf_counter()
    rc = subprocess.run(_cmd(inp, root / "whole.jsonl"), stdout=log, stderr=subprocess.STDOUT).returncode
    whole = {r["id"]: r for r in _rows(root / "whole.jsonl")}
    t.add("predict SIGKILL + rerun", "uninterrupted run", False, False, rc != 0 or len(whole) != N, False,
          f"exit {rc}, {len(whole)} rows", time.perf_counter() - t0)
    out, kills, t0 = root / "killed.jsonl", [], time.perf_counter()
    for k in range(KILLS):  # each kill lands once a few more rows are on disk
        proc = subprocess.Popen(_cmd(inp, out), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        target = len(_rows(out)) + 16
        while proc.poll() is None and len(_rows(out)) < target:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(len(_rows(out)))
        proc.wait()
    rc = subprocess.run(_cmd(inp, out), stdout=log, stderr=subprocess.STDOUT).returncode
    got = _rows(out)
    ids = [r["id"] for r in got]
    lost, doubled = len(set(whole) - set(ids)), len(ids) - len(set(ids))
    skip = ("seconds", "latency_ms", "elapsed_s")  # timings may differ; everything else must not
    different = sum(1 for r in got if r["id"] in whole and
                    {k: v for k, v in r.items() if k not in skip} != {k: v for k, v in whole[r["id"]].items()
                                                                     if k not in skip})
    t.add("predict SIGKILL + rerun", f"{len(kills)} kills, then a full rerun", False, False,
          rc != 0 or different > 0 or len(kills) < KILLS, False,
          f"kills at {kills} rows on disk; rerun exit {rc}; {different} rows differ", time.perf_counter() - t0,
          lost=lost + doubled)
    t.notes.append(f"predict resume: SIGKILL at {kills} rows on disk, then a full rerun: {len(ids)} rows "
                   f"(lost {lost}, doubled {doubled}, different from the uninterrupted run {different})")
    log.close()
