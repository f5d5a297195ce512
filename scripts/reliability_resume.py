"""SIGKILL during `domainvlm train` (augment=dihedral), then `--resume`: the resumed run must log the same loss
at every step as an uninterrupted one, with no step lost or done twice. Two kills: one between checkpoint
writes, one while a checkpoint is being written or swapped in (`.checkpoint.tmp` / `.checkpoint.old` on disk).
"""

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

STEPS, SAVE_EVERY = 30, 5
TINY = dict(image_size=32, patch_size=4, merge_size=2, vision_dim=32, vision_depth=1, vision_heads=2, hidden=64,
            layers=2, heads=2, kv_heads=1, intermediate=128, vocab_size=600, max_position=1024)


def make_data(d: Path) -> tuple[Path, Path]:
    """(records JSONL of rendered wafer maps with their diagnoses, a tiny untrained base model folder)."""
    from domainvlm.domains.wafer.instruct import QUESTIONS
    from domainvlm.domains.wafer.knowledge import answer
    from domainvlm.domains.wafer.patterns import PATTERNS
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.models.compact import CompactConfig, build_compact

    d.mkdir(parents=True)
    rng, rows = np.random.default_rng(0), []
    for i in range(24):
        grid = rng.integers(0, 3, (26, 26)).astype(np.uint8)
        render_map(grid).save(d / f"m{i}.png")
        p = PATTERNS[i % len(PATTERNS)]
        rows.append({"id": f"m{i}", "images": [f"m{i}.png"], "labels": {"task": "wafer", "defects": [p]},
                     "messages": [{"role": "user", "content": f"<image>\n{QUESTIONS['en'][0]}"},
                                  {"role": "assistant", "content": answer((p,), "en")}]})
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = [answer((p,), lang) for p in PATTERNS for lang in ("en", "zh")] + QUESTIONS["en"] + QUESTIONS["zh"]
    build_compact(d / "base", corpus * 3, CompactConfig(**TINY), seed=0)
    return d / "train.jsonl", d / "base"


def _cmd(data: Path, base: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "domainvlm", "train", f"data={data}", f"model={base}", f"output_dir={out}",
            f"max_steps={STEPS}", f"save_every={SAVE_EVERY}", "batch_size=4", "augment=dihedral", "eval_every=0",
            "eval_samples=0", "log_every=1", "report_to=none", "lr=0.002", "--no-progress",
            *(["--resume"] if resume else [])]


def _history(out: Path) -> list[tuple[int, float]]:
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in state["history"] if "loss" in h]


def _step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def _killed_run(data, base, out: Path, in_swap: bool, log) -> str:
    """Start a run and SIGKILL it: after the checkpoint of step 10, or the moment a checkpoint write is seen."""
    proc = subprocess.Popen(_cmd(data, base, out, False), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    where = "not killed: the run ended first"
    while proc.poll() is None:
        writing = [p.name for p in (out / ".checkpoint.tmp", out / ".checkpoint.old") if p.exists()]
        if (in_swap and writing and _step(out) >= SAVE_EVERY) or (not in_swap and _step(out) >= 2 * SAVE_EVERY):
            proc.send_signal(signal.SIGKILL)
            where = f"killed at checkpoint step {_step(out)}" + (f" with {', '.join(writing)} on disk" if writing else "")
            break
        time.sleep(0.002 if in_swap else 0.05)
    proc.wait()
    return where


def run_resume(t: Tally, root: Path) -> None:
    data, base = make_data(root / "resume-data")
    log = open(root / "resume.log", "w")
    t0 = time.perf_counter()
    rc = subprocess.run(_cmd(data, base, root / "whole", False), stdout=log, stderr=subprocess.STDOUT).returncode
    whole = dict(_history(root / "whole")) if rc == 0 else {}
    t.add("train SIGKILL + --resume", "uninterrupted run", False, False, rc != 0, False, f"exit {rc}",
          time.perf_counter() - t0)
    for in_swap in (False, True):
        out, what = root / ("swap" if in_swap else "between"), "kill inside a checkpoint write" if in_swap \
            else "kill between checkpoints"
        t0 = time.perf_counter()
        where = _killed_run(data, base, out, in_swap, log)
        rc = subprocess.run(_cmd(data, base, out, True), stdout=log, stderr=subprocess.STDOUT).returncode
        hist = _history(out) if rc == 0 else []
        steps = [s for s, _ in hist]
        lost, doubled = len(set(whole) - set(steps)), len(steps) - len(set(steps))
        diff = max((abs(v - whole[s]) for s, v in hist if s in whole), default=float("inf"))
        wrong = rc != 0 or diff > 1e-5 or "not killed" in where
        t.add("train SIGKILL + --resume", what, False, False, wrong, False,
              f"{where}; resume exit {rc}; max |loss - uninterrupted| {diff:.2e}", time.perf_counter() - t0,
              lost=lost + doubled)
        t.notes.append(f"train resume ({what}): {where}; {len(steps)} steps logged once each "
                       f"(lost {lost}, doubled {doubled}); final loss {hist[-1][1] if hist else float('nan'):.6f} vs "
                       f"uninterrupted {whole.get(STEPS, float('nan')):.6f}; max per-step difference {diff:.2e}")
    log.close()
