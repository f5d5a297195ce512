"""Serving load check (not a test): C concurrent clients x R requests against `domainvlm serve` on loopback.

Prints errors (by kind) and latency percentiles; exit code 1 if any request failed.

    python bench/load_check.py                        # starts a server for the bundled model
    python bench/load_check.py --model DIR            # ... for another model folder
    python bench/load_check.py --synthetic-model      # ... for an untrained compact model of the bundled size
    python bench/load_check.py --url http://127.0.0.1:8000 --api-key KEY   # an already running server

Each request is a chat completion with a small PNG as a data: URL; every ``--stream-every``-th request
streams (SSE), so batched and streamed paths are loaded together.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="server to load (default: start one on a free loopback port)")
    p.add_argument("--model", help="model folder for the started server (default: bundled)")
    p.add_argument("--synthetic-model", action="store_true", help="start the server on an untrained compact "
                   "model of the bundled architecture (when the bundled model is not there)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--stream-every", type=int, default=10, help="every Nth request streams (0 = never)")
    p.add_argument("--max-batch", type=int, default=16, help="server --max-batch when started here")
    p.add_argument("--server-args", default="", help="extra arguments for the started server")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request timeout (s)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


def images(n: int = 8) -> list[str]:
    out = []
    for i in range(n):
        arr = (np.random.default_rng(i).random((52, 52, 3)) * 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def synthetic_model(dest: Path) -> Path:
    from domainvlm.domains.wafer.knowledge import answer
    from domainvlm.domains.wafer.patterns import PATTERNS
    from domainvlm.models.compact import CompactConfig, build_compact

    corpus = [answer((p,), lang) for p in PATTERNS for lang in ("en", "zh")] * 20
    build_compact(dest, corpus, CompactConfig(), seed=0)
    return dest


def start_server(args, tmp: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = str(synthetic_model(tmp / "model")) if args.synthetic_model else args.model
    cmd = [sys.executable, "-m", "domainvlm", "serve", "--port", str(port), "--log-level", "warning",
           "--max-batch", str(args.max_batch), "--max-queue", str(max(256, 2 * args.clients)),
           *(["--model", model] if model else []), *(["--api-key", args.api_key] if args.api_key else []),
           *args.server_args.split()]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"load_check: server exited:\n{(tmp / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("load_check: server did not start")


async def one(client, url, body, stream) -> None:
    if not stream:
        r = await client.post(url, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:120]}")
        if not isinstance(r.json()["choices"][0]["message"]["content"], str):
            raise RuntimeError("malformed completion")
        return
    done = False
    async with client.stream("POST", url, json={**body, "stream": True}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and "error" in json.loads(line[6:]):
                raise RuntimeError("stream error event")
            done = done or line == "data: [DONE]"
    if not done:
        raise RuntimeError("stream ended without [DONE]")


async def load(args, url: str) -> dict:
    imgs, lat, errors = images(), [], Counter()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=args.timeout, headers=headers, limits=limits) as client:
        async def worker(c: int):
            for k in range(args.requests):
                n = c * args.requests + k
                body = {"model": "domainvlm", "max_tokens": args.max_tokens, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": imgs[n % len(imgs)]}},
                    {"type": "text", "text": "What defect pattern does this wafer map show?"}]}]}
                stream = bool(args.stream_every) and n % args.stream_every == args.stream_every - 1
                t = time.perf_counter()
                try:
                    await one(client, url + "/v1/chat/completions", body, stream)
                    lat.append((time.perf_counter() - t, stream))
                except Exception as e:  # noqa: BLE001 - counted and reported, the load goes on
                    errors[f"{e.__class__.__name__}: {str(e)[:80]}"] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(args.clients)))
        wall = time.perf_counter() - t0
        health = (await client.get(url + "/health")).json()
    all_s = sorted(x for x, _ in lat)

    def pct(xs, q):
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1) if xs else None

    return {"clients": args.clients, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
            "total": args.clients * args.requests, "ok": len(lat), "errors": sum(errors.values()),
            "error_kinds": dict(errors), "wall_s": round(wall, 2), "req_per_s": round(len(lat) / wall, 2),
            "p50_ms": pct(all_s, 0.50), "p95_ms": pct(all_s, 0.95), "p99_ms": pct(all_s, 0.99),
            "max_ms": pct(all_s, 1.0), "mean_ms": round(statistics.mean(all_s) * 1000, 1) if all_s else None,
            "stream_p50_ms": pct(sorted(x for x, s in lat if s), 0.5),
            "batched_p50_ms": pct(sorted(x for x, s in lat if not s), 0.5),
            "largest_batch": health.get("largest_batch"), "batches_run": health.get("batches_run")}


def main() -> int:
    args = parse()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if not url:
            proc, url = start_server(args, Path(tmp))
        try:
            res = asyncio.run(load(args, url.rstrip("/")))
        finally:
            if proc:
                proc.terminate()
                proc.wait(30)
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU x{os.cpu_count()}"
    except ImportError:
        dev = "unknown"
    res["machine"] = f"{platform.machine()} {dev}"
    print(f"load_check: {res['total']} requests ({res['clients']} clients x {res['requests_per_client']}), "
          f"max_tokens={res['max_tokens']}, on {res['machine']}")
    print(f"  ok {res['ok']}, errors {res['errors']}" + "".join(f"\n    {n} x {k}" for k, n in
                                                              res["error_kinds"].items()))
    print(f"  latency p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms, p99 {res['p99_ms']} ms, max {res['max_ms']} ms"
          f" (batched p50 {res['batched_p50_ms']} ms, streamed p50 {res['stream_p50_ms']} ms)")
    print(f"  throughput {res['req_per_s']} req/s over {res['wall_s']} s; largest batch {res['largest_batch']}, "
          f"{res['batches_run']} batches")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
