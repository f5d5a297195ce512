"""`domainvlm serve`: OpenAI-compatible HTTP API (+ VisualGLM-style POST /) over FastAPI and uvicorn."""

from __future__ import annotations

import os
import socket

from ._args import (add_model_options, add_sampling_options, engine_from_args, key_from_env, nonneg_float,
                    positive_float, positive_int, sampling_from_args)

NAME = "serve"
HELP = "serve a model over HTTP: OpenAI-compatible /v1/chat/completions, POST /, /health, /docs"


def add_arguments(p):
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to expose; set --api-key then)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("DOMAINVLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $DOMAINVLM_API_KEY; none = open). "
                        "Prefer the environment: a key on the command line shows in 'ps'")
    p.add_argument("--api-key-env", metavar="VAR", help="read the API key from environment variable VAR")
    p.add_argument("--protect-docs", action="store_true", help="/docs and /openapi.json need the API key too")
    p.add_argument("--served-model-name", help="model id reported by /v1/models (default: folder name); requests "
                   "naming another model (not this id, the folder name or 'domainvlm') get 404 model_not_found")
    p.add_argument("--max-tokens-cap", type=positive_int, default=2048, help="largest max_tokens a request may ask for")
    p.add_argument("--max-batch", type=positive_int, default=8, help="requests generated together on the device")
    p.add_argument("--batch-wait-ms", type=nonneg_float, default=5.0, help="how long to wait to fill a batch")
    p.add_argument("--max-queue", type=positive_int, default=256, help="queued requests before answering 503")
    p.add_argument("--max-queued-image-mb", type=positive_float, default=1024.0,
                   help="decoded images waiting for the engine before new requests get 503 (memory budget)")
    p.add_argument("--decode-slots", type=positive_int, default=4,
                   help="requests whose images are decoded at the same time (bounds that memory)")
    p.add_argument("--max-body-mb", type=positive_float, default=20.0)
    p.add_argument("--max-image-pixels", type=positive_int, default=16_000_000)
    p.add_argument("--max-prompt-tokens", type=positive_int,
                   help="refuse longer prompts with 400 (default: the model's context, max_position_embeddings)")
    p.add_argument("--request-timeout", type=positive_float, default=60.0,
                   help="seconds one batch may decode before it is cut off; /health says 503 'stuck' past it")
    p.add_argument("--max-images", type=positive_int, default=4, help="images per request")
    p.add_argument("--allow-local-files", metavar="DIR",
                   help="accept file:// image URLs, only for files inside DIR (off by default)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_options(p)
    add_sampling_options(p)  # the defaults for requests that leave a field out


def _check_port(host: str, port: int) -> None:
    from ..errors import UserError

    if not 0 < port < 65536:
        raise UserError(f"--port: {port} is not a valid port")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"--host/--port: cannot listen on {host}:{port} ({e.strerror})") from None


def tame_malloc() -> bool:
    """glibc raises its mmap threshold after every large free, so decoded images (16-64 MB each, decoded in
    many threads) are later carved from per-thread heaps that never shrink: RSS ratchets up. A fixed 1 MB
    threshold and 2 arenas hand that memory back (16 clients x 4 images of 16 MP: peak 4.6 -> 2.5 GiB,
    bench/image_memory.py). No-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 20)) and bool(mallopt(M_ARENA_MAX, 2))


def build(args):
    """(app, batcher) from parsed args; separate from run() so tests and the load check can reuse it."""
    from pathlib import Path

    from ..errors import UserError
    from ..inference.batcher import Batcher
    from ..models.loader import default_model_dir
    from ..serve.app import ServeConfig, create_app

    if args.max_new_tokens > args.max_tokens_cap:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} is over --max-tokens-cap {args.max_tokens_cap}")
    root = None
    if args.allow_local_files:
        root = Path(args.allow_local_files).expanduser().resolve()
        if not root.is_dir():
            raise UserError(f"--allow-local-files: {root} is not a folder")
    api_key = key_from_env(args.api_key_env) if args.api_key_env else args.api_key
    if args.protect_docs and not api_key:
        raise UserError("--protect-docs needs an API key (--api-key-env VAR or $DOMAINVLM_API_KEY)")
    eng = engine_from_args(args)
    name = args.served_model_name or Path(args.model or default_model_dir()).resolve().name
    cfg = ServeConfig(model_name=name, api_key=api_key or None, protect_docs=args.protect_docs,
                      max_body_bytes=int(args.max_body_mb * 2**20),
                      max_image_pixels=args.max_image_pixels, max_images=args.max_images,
                      max_tokens_cap=args.max_tokens_cap, local_files_root=root,
                      max_prompt_tokens=args.max_prompt_tokens, request_timeout=args.request_timeout,
                      decode_slots=args.decode_slots, sampling=sampling_from_args(args))
    batcher = Batcher(eng, max_batch=args.max_batch, max_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
                      max_image_bytes=int(args.max_queued_image_mb * 2**20))
    return create_app(batcher, cfg), batcher


def run(args):
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        from ..errors import UserError

        raise UserError("serving needs the 'serve' extra: pip install 'domainvlm[serve]'") from None
    _check_port(args.host, args.port)
    tame_malloc()
    app, batcher = build(args)
    key = "API key required" if app.state.api_key else "no API key (open)"
    print(f"domainvlm: serving {app.title} for model '{batcher.engine.model_dir}' on "
          f"http://{args.host}:{args.port} (OpenAI base_url http://{args.host}:{args.port}/v1; {key})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    batcher.close()
    return 0
