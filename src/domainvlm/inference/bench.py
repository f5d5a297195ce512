"""Latency and throughput of the answer path: one wafer map in, a full English answer out.

What is timed is :meth:`Engine.generate` on in-memory canvas images (224 x 224 PNG-equivalent PIL images):
prompt building, pixel preprocessing, vision tower, prefill, constrained decoding and answer text. Reading
the file from disk and loading the model are not included. Maps are real val maps when a wafer file is given,
otherwise seeded synthetic maps (data/wafer_synth.py), so the benchmark runs without any data set.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def bench_images(n: int, source: str | None = None, seed: int = 0):
    """``n`` canvas images: maps of ``source`` (val split if it has one) or synthetic MixedWM38-like maps."""
    from ..data.wafer_canvas import canvas_batch, canvas_rgb
    from PIL import Image

    if source:
        from ..data.wafer_sources import load_wafer_file

        ws = load_wafer_file(source)
        if ws.split is not None and "val" in ws.splits():
            ws = ws.select("val")
        idx = np.random.default_rng(seed).choice(len(ws), size=min(n, len(ws)), replace=False)
        maps = [ws.maps[i] for i in idx]
    else:
        from ..data.wafer_synth import synth_set

        maps = synth_set(n, seed=seed).maps
    return [Image.fromarray(a) for a in canvas_rgb(canvas_batch(maps))]


def _sync(engine):
    import torch

    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def latency(engine, images, question: str, runs: int = 100, warmup: int = 10, sampling=None) -> dict:
    """Batch-1 latency over ``runs`` different maps (ms): p50, p95, mean."""
    msgs = [{"role": "user", "content": f"<image>\n{question}"}]
    for k in range(warmup):
        engine.generate([(msgs, [images[k % len(images)]])], sampling)
    ts = []
    for k in range(runs):
        _sync(engine)
        t = time.perf_counter()
        engine.generate([(msgs, [images[k % len(images)]])], sampling)
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
