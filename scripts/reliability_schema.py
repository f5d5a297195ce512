"""schemathesis (property-based fuzzing) against the server's own /openapi.json, counted into the table.

Checks: all but ``positive_data_acceptance``. That one expects every schema-valid request to be accepted,
but some refusals are about content a schema cannot express: bytes that are no image, a conversation whose
last turn is not the user's, a prompt over the token budget, a ``max_tokens`` over the server's cap. They get a
400 naming the field, which is the right answer. Everything else counts: 5xx (ST101/ST102), undocumented
statuses or content types and bodies that violate the documented schema (schema mismatches), schema-invalid
requests accepted (negative data), missing ``Allow`` on 405, auth ignored, and answers slower than the
server's request timeout plus 10 s (ST112, counted as wrong).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from reliability_common import Tally, server

FIVE_XX = {"ST101", "ST102", "ST113"}
SLOW = {"ST112"}
TIMEOUT_S = 60  # the server's --request-timeout below


def schemathesis_bin() -> str | None:
    exe = Path(sys.executable).with_name("schemathesis")
    return str(exe) if exe.exists() else shutil.which("schemathesis")


def parse(out: str) -> tuple[int, dict[str, int], int]:
    """schemathesis' summary -> (test cases generated, {failure code: count}, runtime errors)."""
    generated = sum(int(n) for n in re.findall(r"(\d+) generated", out)[-1:])
    codes: dict[str, int] = {}
    summary = out[out.rfind("SUMMARY"):]
    for code, n in re.findall(r"(ST\d{3}) [^\n:]*: (\d+)", summary):
        codes[code] = codes.get(code, 0) + int(n)
    errors = sum(int(n) for n in re.findall(r"🚫 [^\n:]*: (\d+)", summary))
    return generated, codes, errors


def run_schema(t: Tally, root: Path, max_examples: int = 100, seed: int = 1) -> None:
    exe = schemathesis_bin()
    if exe is None:
        t.notes.append("schemathesis not installed (pip install schemathesis): schema fuzzing skipped")
        return
    with server(root, "--max-new-tokens", "16", "--max-tokens-cap", "64", "--request-timeout", str(TIMEOUT_S),
                name="schema-server") as (proc, base, log):
        t0 = time.perf_counter()
        cmd = [exe, "run", f"{base}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
               "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "2", "--request-timeout",
               str(TIMEOUT_S + 30), "--max-response-time", str(TIMEOUT_S + 10), "-H", "Authorization: Bearer k",
               "--no-color"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=root)  # its cache stays there
        secs = time.perf_counter() - t0
        (root / "schemathesis.txt").write_text(done.stdout + done.stderr)
    generated, codes, errors = parse(done.stdout)
    five = sum(n for c, n in codes.items() if c in FIVE_XX)
    slow = sum(n for c, n in codes.items() if c in SLOW)
    mismatch = sum(n for c, n in codes.items() if c not in FIVE_XX | SLOW)
    detail = ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())) or "none"
    t.add("schemathesis /openapi.json", f"{max_examples} examples/op, seed {seed}", False, five, slow, False,
          f"failures {detail}; see {root / 'schemathesis.txt'}", 0.0, mismatch=mismatch, inputs=generated)
    t.notes.append(f"schemathesis: {generated} generated cases in {secs:.0f} s, none slower than {TIMEOUT_S + 10} s"
                   if not slow else f"schemathesis: {slow} answer(s) slower than {TIMEOUT_S + 10} s")
    if errors:  # schemathesis' own crashes (a generator bug, a flaky replay): reported, not ours to count
        t.notes.append(f"schemathesis reported {errors} runtime error(s) of its own (see its output)")
    tb = log.read_text().count("Traceback")
    t.add("schemathesis server log", "tracebacks", tb > 0, False, False, False, f"{tb} tracebacks in {log}")
