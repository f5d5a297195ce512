"""The web UI's upload path under bad files: each corpus image uploaded through gradio's own upload route and
asked about (gradio_client, as the browser does), plus an upload over the size limit sent raw."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from reliability_common import Tally, free_port, running

Q = "What defect pattern does this wafer map show?"


@contextlib.contextmanager
def webui(root: Path):
    port, log = free_port(), root / "webui.log"
    base = f"http://127.0.0.1:{port}/"
    with running(["webui", "--port", str(port), "--max-new-tokens", "16"], base, log, "web UI", tries=300):
        yield base, log


def run_webui(t: Tally, root: Path, imgs) -> None:
    import httpx
    from gradio_client import Client, handle_file

    entry = "web UI upload"
    with webui(root) as (base, log):
        client = Client(base, verbose=False)
        for name, (path, rc) in imgs.items():
            if not path.is_file() or path.stat().st_size == 0:  # gradio's client refuses to send these itself
                continue
            t0, err = time.perf_counter(), None
            try:
                client.predict(Q, handle_file(str(path)), 16, 0, 1, 0, api_name="/respond")
            except Exception as e:  # noqa: BLE001 - the app's error, as the browser would show it
                err = str(e)
            secs = time.perf_counter() - t0
            # a good file answers; a bad one is one line naming the upload (not the server's temp path)
            ok = err is None if rc == 0 else (err is not None and "\n" not in err and path.name in err
                                              and "/tmp/" not in err)
            t.add(entry, name, False, False, not ok, False, f"error {err!r}", secs)
        big = root / "big.png"
        big.write_bytes(b"\x89PNG" + os.urandom(25 << 20))
        t0 = time.perf_counter()
        with open(big, "rb") as f:
            r = httpx.post(base + "gradio_api/upload", files={"files": ("big.png", f)}, timeout=120)
        t.add(entry, "25 MB upload", False, r.status_code >= 500, r.status_code not in (413, 400), False,
              f"status {r.status_code}", time.perf_counter() - t0)
        alive = httpx.get(base, timeout=10).status_code == 200
        t.add(entry, "alive after the corpus", False, not alive, not alive, False, "web UI down")
    tb = log.read_text().count("Traceback")
    t.add("web UI log", "tracebacks", tb > 0, False, False, False, f"{tb} tracebacks in {log}")
