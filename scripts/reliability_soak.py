"""A soak of mixed traffic against `domainvlm serve` on loopback for SOAK_S seconds, watching the server's RSS.

4 clients loop over: a chat completion with an image, the same streamed, the legacy POST / with an image, a
text-only question, and a bad request (a truncated image: 400). Counted: requests, 5xx, wrong statuses,
dropped connections, the slowest answer, and memory growth (RSS at the end minus RSS after the first 10% of
the run, when caches and allocator pools have filled).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np

from reliability_common import Tally, rss_mb, server

CLIENTS = 4


def _bodies() -> list[tuple[str, str, dict, int]]:
    from domainvlm.domains.wafer.render import render_map

    buf = io.BytesIO()
    render_map(np.random.default_rng(1).integers(0, 3, (26, 26)).astype(np.uint8)).save(buf, "PNG")
    good = base64.b64encode(buf.getvalue()).decode()
    bad = base64.b64encode(buf.getvalue()[:200]).decode()
    q = "What defect pattern does this wafer map show?"

    def chat(b64, **kw):
        return {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}, {"type": "text", "text": q}]}],
            "max_tokens": 16, **kw}
    return [("chat", "/v1/chat/completions", chat(good), 200),
            ("chat stream", "/v1/chat/completions", chat(good, stream=True), 200),
            ("legacy", "/", {"text": q, "image": good, "max_new_tokens": 16}, 200),
            ("text only", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
             200),
            ("bad image", "/v1/chat/completions", chat(bad), 400)]


def run_soak(t: Tally, root: Path, seconds: float) -> None:
    import httpx

    entry = f"soak {seconds:.0f} s, {CLIENTS} clients"
    bodies, lock = _bodies(), threading.Lock()
    counts = {"n": 0, "five": 0, "wrong": 0, "dropped": 0, "slowest": (0.0, "")}
    fails: list[str] = []
    with server(root, name="soak-server") as (proc, base, log):
        stop_at = time.monotonic() + seconds

        def client(k: int):
            with httpx.Client(base_url=base, headers={"Authorization": "Bearer k"}, timeout=120) as c:
                i = k
                while time.monotonic() < stop_at:
                    what, path, body, want = bodies[i % len(bodies)]
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        r = c.post(path, json=body)
                        status = r.status_code
                        if body.get("stream") and status == 200 and not r.text.rstrip().endswith("[DONE]"):
                            status = "stream without [DONE]"
                    except httpx.HTTPError as e:
                        status = e.__class__.__name__
                    secs = time.perf_counter() - t0
                    with lock:
                        counts["n"] += 1
                        counts["five"] += isinstance(status, int) and status >= 500
                        counts["dropped"] += not isinstance(status, int)
                        counts["wrong"] += status != want
                        if status != want:
                            fails.append(f"{what}: {status}")
                        if secs > counts["slowest"][0]:
                            counts["slowest"] = (secs, what)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        for th in threads:
            th.start()
        samples, warm_at, warm = [], time.monotonic() + 0.1 * seconds, None
        while any(th.is_alive() for th in threads):
            rss = rss_mb(proc.pid)
            if rss is not None:
                samples.append(rss)
                if warm is None and time.monotonic() >= warm_at:
                    warm = rss
            time.sleep(1.0)
        end, peak = (samples[-1] if samples else 0.0), max(samples, default=0.0)
    growth = end - (warm if warm is not None else end)
    tb = log.read_text().count("Traceback")
    t.add(entry, "mixed traffic", tb > 0, counts["five"], counts["wrong"], False,
          f"{fails[:5]}; {tb} tracebacks in {log}", counts["slowest"][0], lost=counts["dropped"],
          inputs=counts["n"])
    t.slowest[entry] = counts["slowest"]
    t.memory[entry] = f"{growth:+.0f} MB (RSS {warm or 0:.0f} -> {end:.0f} MB, peak {peak:.0f})"
    t.notes.append(f"soak: {counts['n']} requests in {seconds:.0f} s ({counts['n'] / seconds:.2f} req/s), "
                   f"{counts['dropped']} dropped connections")
