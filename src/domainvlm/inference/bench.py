"""Latency and throughput of the answer path: one image in, a full answer out.

What is timed is :meth:`Engine.generate` on in-memory images (``domainvlm bench`` takes wafer canvas images
from the wafer domain: real val maps when a wafer file is given, otherwise seeded synthetic maps): prompt
building, pixel preprocessing, vision tower, prefill, constrained decoding and answer text. Reading the file
from disk and loading the model are not included.
"""

from __future__ import annotations

import statistics
import time


def _sync(engine):
    import torch

    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def latency(engine, images, question: str, runs: int = 100, warmup: int = 10, sampling=None, then=None) -> dict:
    """Batch-1 latency over ``runs`` different maps (ms): p50, p95, mean. ``then(messages, image, answer)``:
    more work per map timed with the answer (e.g. the head's evidence)."""
    msgs = [{"role": "user", "content": f"<image>\n{question}"}]

    def one(im):
        ans = engine.generate([(msgs, [im])], sampling)[0]
        if then is not None:
            then(msgs, im, ans)

    for k in range(warmup):
        one(images[k % len(images)])
    ts = []
    for k in range(runs):
        _sync(engine)
        t = time.perf_counter()
        one(images[k % len(images)])
        _sync(engine)
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return {"p50_ms": round(ts[len(ts) // 2], 2), "p95_ms": round(ts[min(len(ts) - 1, int(0.95 * len(ts)))], 2),
            "mean_ms": round(statistics.fmean(ts), 2), "runs": runs}


def throughput(engine, images, question: str, batch_size: int, repeats: int = 3, sampling=None) -> dict:
    """Maps per second answering ``images`` in batches of ``batch_size`` (best and median of ``repeats``)."""
    msgs = [{"role": "user", "content": f"<image>\n{question}"}]
    convs = [(msgs, [im]) for im in images]
    engine.generate(convs[:batch_size], sampling)  # warm-up
    rates = []
    for _ in range(repeats):
        _sync(engine)
        t = time.perf_counter()
        for s in range(0, len(convs), batch_size):
            engine.generate(convs[s:s + batch_size], sampling)
        _sync(engine)
        rates.append(len(convs) / (time.perf_counter() - t))
    return {"maps_per_s": round(statistics.median(rates), 1), "best_maps_per_s": round(max(rates), 1),
            "batch_size": batch_size, "maps": len(convs), "repeats": repeats}


def machine() -> str:
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    s = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(0)}"
    return s
