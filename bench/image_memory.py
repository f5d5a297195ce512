"""Server memory under large images (not a test): C clients send R requests of K images of S x S pixels each
to `domainvlm serve` (bundled model) on loopback and the server's RSS is sampled throughout.

    python bench/image_memory.py                                   # 8 clients x 3 requests x 4 images, 4000^2
    python bench/image_memory.py --server-args "--max-queued-image-mb 100000 --decode-slots 64"  # no bounds

Images: rendered wafer maps (palette path: read back and redrawn) and smooth gradients (not a map), as PNGs
that compress to kilobytes but decode to S*S*3 bytes each. Prints one table row: answers by status, latency,
peak RSS (VmHWM) and the largest RSS sampled.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=3, help="per client")
    p.add_argument("--images", type=int, default=4, help="per request")
    p.add_argument("--size", type=int, default=4000, help="image side in pixels (4000 -> 16 MP)")
    p.add_argument("--server-args", default="")
    return p.parse_args()


def data_urls(size: int, n: int) -> list[str]:
    from domainvlm.domains.wafer.render import render_map

    out = []
    for i in range(n):
        if i % 2 == 0:
            im = render_map(np.random.default_rng(i).integers(0, 3, (40, 40)).astype(np.uint8), size=size)
        else:
            ramp = np.linspace(0, 255, size, dtype=np.float32)
            im = Image.fromarray(np.stack([np.add.outer(ramp, ramp * 0) % 256, np.add.outer(ramp * 0, ramp) % 256,
                                           np.full((size, size), 40 * i % 256)], -1).astype(np.uint8))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def rss_kib(pid: int, key: str) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith(key):
            return int(ln.split()[1])
    return 0


def main() -> int:
    a = parse()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "domainvlm", "serve", "--port", str(port), "--log-level", "warning",
           *shlex.split(a.server_args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        urls = data_urls(a.size, a.images)
        body = {"max_tokens": 16, "messages": [{"role": "user", "content": [
            *({"type": "image_url", "image_url": {"url": u}} for u in urls),
            {"type": "text", "text": "What defect pattern does this wafer map show?"}]}]}
        idle = rss_kib(proc.pid, "VmRSS")
        top, done = [idle], threading.Event()

        def sample():
            while not done.is_set():
                top.append(rss_kib(proc.pid, "VmRSS"))
                time.sleep(0.05)

        def client(_):
            got = []
            for _ in range(a.requests):
                t = time.perf_counter()
                try:
                    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=600)
                    got.append((r.status_code, time.perf_counter() - t))
                except httpx.HTTPError as e:
                    got.append((e.__class__.__name__, time.perf_counter() - t))
            return got

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.clients) as pool:
            res = [x for part in pool.map(client, range(a.clients)) for x in part]
        wall = time.perf_counter() - t0
        done.set()
        peak = rss_kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)
    codes = Counter(c for c, _ in res)
    ok = sorted(t for c, t in res if c == 200)
    mp = a.size * a.size / 1e6
    print("| clients x requests x images | image | server args | answers | p50 / max 200 (s) | idle RSS | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {a.clients} x {a.requests} x {a.images} | {a.size}^2 ({mp:.0f} MP) | {a.server_args or '(defaults)'} | "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items(), key=str))} | "
          f"{statistics.median(ok) if ok else float('nan'):.1f} / {max(ok) if ok else float('nan'):.1f} | "
          f"{idle / 2**20:.2f} GiB | {max(peak, max(top)) / 2**20:.2f} GiB |")
    print(f"wall {wall:.0f} s")
    return 0 if all(c in (200, 503) for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
