"""Batch-1 latency of the wafer expert's answer with and without evidence, attribution variants interleaved.

On a shared machine the load changes within minutes, so one ``domainvlm bench`` run per variant compares runs
under different loads. This times the answer alone and the answer plus each variant's evidence in turn on the
same maps (``inference.bench.latency`` with ``then=head.evidence_for``), for several rounds, and prints each
round's p50 and their median.

    python bench/wafer_evidence_latency.py [--rounds 3] [--runs 30] [VARIANT ...]

VARIANT is level:steps:at (level ``p`` = pixels), e.g. ``6:1:0.5`` (the default) ``p:4:0.5`` (the old default);
``:ref`` after it: the reference path (no reuse of the answer's vision tokens, the HF LM forward twice), e.g.
``6:1:0.5:ref`` (the default before the fast path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", default=["6:1:0.5", "6:1:0.5:ref"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch

    from domainvlm.domains.wafer.bench import bench_images
    from domainvlm.domains.wafer.evidence import Attributor
    from domainvlm.inference.bench import latency
    from domainvlm.inference.engine import Engine

    torch.set_num_threads(a.threads)
    eng = Engine(None, device="cpu", threads=a.threads)
    head, imgs = eng.answer_head, bench_images(a.runs)
    atts = {"answer": None}
    for v in a.variants:
        level, steps, at, *ref = v.split(":")
        atts[v] = Attributor(head, int(steps), None if level == "p" else int(level), float(at), fast=ref != ["ref"])
    res = {v: [] for v in atts}
    for _ in range(a.rounds):
        for v, att in atts.items():
            head._attributor = att  # what head.evidence_for uses
            then = None if att is None else head.evidence_for
            res[v].append(latency(eng, imgs, "What defect pattern does this wafer map show?", runs=a.runs,
                                  warmup=3, then=then)["p50_ms"])
    print(f"{'variant':<10}{'median p50 ms':>15}  per round")
    for v, x in res.items():
        print(f"{v:<10}{np.median(x):>15.1f}  {x}")


if __name__ == "__main__":
    main()
