"""`domainvlm webui`: Gradio chat in the browser (upload or webcam image, streamed answers, examples)."""

from __future__ import annotations

import os

from ._args import add_model_options, add_sampling_options, engine_from_args, sampling_from_args

NAME = "webui"
HELP = "browser chat UI (Gradio): domainvlm webui [--model DIR] [--port 7860] [--share]"


def add_arguments(p):
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to expose on the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (contacts gradio.app)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require a login (default: $DOMAINVLM_WEBUI_AUTH)",
                   default=os.environ.get("DOMAINVLM_WEBUI_AUTH"))
    p.add_argument("--examples", metavar="DIR", help="folder of example images; clicking one fills the image only "
                   "(default: synthetic wafer maps, with a wafer question)")
    p.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest image file accepted (default 20; full-size DR DICOMs are 20-30 MB)")
    p.add_argument("--title", default="domainvlm")
    add_model_options(p)
    add_sampling_options(p)


def run(args):
    from ..errors import UserError
    from .serve import _check_port

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the web UI needs the 'serve' extra: pip install 'domainvlm[serve]'") from None
    if args.examples and not os.path.isdir(os.path.expanduser(args.examples)):
        raise UserError(f"--examples: {args.examples} is not a folder")
    auth = None
    if args.auth:
        user, sep, pw = args.auth.partition(":")
        if not sep or not user or not pw:
            raise UserError("--auth: expected USER:PASSWORD")
        auth = (user, pw)
    if not 0 < args.max_upload_mb <= 1024:
        raise UserError("--max-upload-mb: must be above 0 and at most 1024")
    if not 1 <= args.max_new_tokens <= 1024:
        raise UserError("--max-new-tokens: must be between 1 and 1024")
    _check_port(args.host, args.port)
    from transformers.utils import logging as hf_logging

    from ..webui.app import build_demo, example_images, launch

    hf_logging.disable_progress_bar()
    engine = engine_from_args(args)
    defaults = sampling_from_args(args)
    demo = build_demo(engine, defaults, example_images(args.examples), title=args.title,  # the wafer question
                      max_upload_mb=args.max_upload_mb,
                      **({"example_question": None} if args.examples else {}))  # fits the wafer examples only
    print(f"domainvlm: web UI for '{engine.model_dir}' on http://{args.host}:{args.port}", flush=True)
    launch(demo, args.host, args.port, share=args.share, auth=auth, max_upload_mb=args.max_upload_mb)
    return 0
