"""What the reliability check's parts share: the result table and a `domainvlm serve` on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

COLS = ("inputs", "tracebacks", "5xx", "wrong exit/status", "schema mismatches", "partial files",
        "rows lost/doubled")


class Tally:
    def __init__(self):
        self.rows: dict[str, list[int]] = {}  # entry -> counts in COLS order
        self.slowest: dict[str, tuple[float, str]] = {}
        self.memory: dict[str, str] = {}  # entry -> memory growth, as measured by that part
        self.failures: list[str] = []
        self.notes: list[str] = []

    def add(self, entry: str, what: str, traceback=False, five=False, wrong=False, partial=False, note="",
            secs: float = 0.0, mismatch=0, lost=0, inputs=1):
        r = self.rows.setdefault(entry, [0] * len(COLS))
        for k, v in enumerate((inputs, traceback, five, wrong, mismatch, partial, lost)):
            r[k] += int(v)
        if secs >= self.slowest.get(entry, (0.0, ""))[0]:
            self.slowest[entry] = (secs, what)
        if traceback or five or wrong or partial or mismatch or lost:
            self.failures.append(f"{entry} {what}: {note}"[:300])

    def print(self):
        cols = ("entry point", *COLS, "max latency (s)", "memory growth")
        print("| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
        tot = [0] * len(COLS)
        for entry, r in self.rows.items():
            tot = [a + b for a, b in zip(tot, r)]
            secs, what = self.slowest.get(entry, (0.0, ""))
            print(f"| {entry} | " + " | ".join(map(str, r)) + f" | {secs:.1f} ({what}) | {self.memory.get(entry, '')} |")
        print("| **all** | " + " | ".join(f"**{x}**" for x in tot) + " | | |")
        for n in self.notes:
            print("  note:", n)
        for f in self.failures:
            print("  FAIL", f)
        return tot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        line = [ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith(field)]
        return int(line[0].split()[1]) / 1024
    return None


@contextlib.contextmanager
def running(cmd: list[str], url: str, log: Path, what: str, tries: int = 240, env: dict | None = None):
    """A `domainvlm` subprocess, up once ``url`` answers 200 (polled every 0.5 s, ``tries`` times); yields the
    process; terminated (then killed) on the way out."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "domainvlm", *cmd], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        for _ in range(tries):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-500:]}")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def server(root: Path, *args: str, key: str = "k", name: str = "server"):
    """A `domainvlm serve` subprocess (API key ``key`` from the environment): yields (process, base URL, log)."""
    port, log = free_port(), root / f"{name}.log"
    base = f"http://127.0.0.1:{port}"
    cmd = ["serve", "--port", str(port), "--api-key-env", "RELIAB_KEY", "--log-level", "warning", *args]
    with running(cmd, base + "/health", log, "server", env={"RELIAB_KEY": key}) as proc:
        yield proc, base, log
