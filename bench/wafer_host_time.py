"""Host-side cost per wafer map in the wafer head's batched path, stage by stage, on this machine's CPU.

At GPU batch sizes the GPU finishes a batch of 2,048 maps in well under a second, so what the host spends per
map (image -> array, patches, the patch embedding when it runs on the CPU) bounds the batched rate. Prints a
table: milliseconds per batch and maps/s for each stage, the previous way and the current way side by side.

    python bench/wafer_host_time.py [--maps 2048] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) * 1e3


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from domainvlm.domains.wafer.canvas import canonical_image
    from domainvlm.domains.wafer.bench import bench_images
    from domainvlm.inference.bench import machine
    from domainvlm.inference.engine import Engine
    from domainvlm.domains.wafer.head import head_for
    from domainvlm.models.qwen_fast import patchify

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    imgs = bench_images(args.maps)
    head = head_for(Engine(None, device="cpu"))
    n_patch = min(256, args.maps)  # the patch stages run on at most 256 maps (memory), scaled to --maps
    arr = torch.from_numpy(np.stack([np.asarray(im) for im in imgs[:n_patch]]))
    pv2, pv1 = patchify(arr, **head.ip), patchify(arr, **head.patch_ip)
    w, conv = head.vision._kernel(), head.vision.visual.patch_embed
    scale = args.maps / n_patch

    stages = [
        ("canonical_image", lambda: [canonical_image(im.convert("RGB"), head.size) for im in imgs],  # its old copy
         lambda: [canonical_image(im, head.size) for im in imgs], 1.0),
        ("PIL -> uint8 array", lambda: np.stack([np.asarray(im.convert("RGB")) for im in imgs]),
         lambda: head.rgb_array(imgs), 1.0),
        ("patchify (CPU)", lambda: patchify(arr, **head.ip), lambda: patchify(arr, **head.patch_ip), scale),
        ("patch embedding (CPU)", lambda: conv(pv2), lambda: head.vision.embed_patches(pv1), scale),
    ]
    t = Table(title=f"host time for {args.maps} maps, {args.threads} threads")
    for col in ("stage", "previous ms", "current ms", "current maps/s"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    with torch.inference_mode():
        for name, old, new, k in stages:
            a = best_ms(old, args.repeats) * k
            b = best_ms(new, args.repeats) * k
            t.add_row(name, f"{a:.0f}", f"{b:.0f}", f"{args.maps / max(b, 1e-3) * 1e3:,.0f}")
    Console().print(t)
    print(machine(), f"; conv weight {tuple(w.shape)}")


if __name__ == "__main__":
    main()
