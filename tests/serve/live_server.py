"""The API server of an engine, run in-process on a free loopback port in a thread (for the official `openai`
client, which needs a real socket)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


@contextlib.contextmanager
def live_server(eng):
    """Yields the server's base URL (``http://127.0.0.1:PORT``); stops the server and its batcher after."""
    import uvicorn

    from domainvlm.inference.batcher import Batcher
    from domainvlm.serve.app import ServeConfig, create_app

    batcher = Batcher(eng, max_batch=4, max_wait_ms=5)
    app = create_app(batcher, ServeConfig(model_name="tiny", max_tokens_cap=256))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)
        batcher.close()
