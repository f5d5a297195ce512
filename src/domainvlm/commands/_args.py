"""argparse types for numeric options: a bad value stops at parse time with one line naming the option
(``argument --batch-size: must be at least 1, got 0``), before any model is loaded or file written."""

from __future__ import annotations

import argparse
import os


def _number(kind, lo=None, hi=None, lo_open=False, what=None):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if v != v or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v

    return parse


positive_int = _number(int, 1, what="at least 1")
nonneg_int = _number(int, 0, what="0 or more")
nonneg_float = _number(float, 0.0, what="0 or more")
positive_float = _number(float, 0.0, lo_open=True, what="above 0")
share = _number(float, 0.0, 1.0, what="in [0, 1]")
top_p = _number(float, 0.0, 1.0, lo_open=True, what="in (0, 1]")
temperature = _number(float, 0.0, 2.0, what="in [0, 2]")
repetition_penalty = _number(float, 0.0, 10.0, lo_open=True, what="in (0, 10]")
seed = _number(int, 0, what="0 or more")

DTYPES = ["float32", "bfloat16", "float16"]


def device_name(text: str) -> str:
    """torch device names (torch itself would refuse 'gpu' or 'cuda:x' only once the model loads, with a
    RuntimeError traceback)."""
    import re

    if not re.fullmatch(r"cpu|mps|(cuda|xpu)(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expects cpu, cuda or cuda:N, got {text!r}")
    return text


def out_file(text: str) -> str:
    """An output file path, checked before the work that fills it (a folder or a path through a file failed
    only at the end, after a long run)."""
    from pathlib import Path

    p = Path(text).expanduser()
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    parent = next((a for a in p.parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
    return text


def _env_threads() -> int | None:
    """OMP_NUM_THREADS as a positive int, or None (unset or not a number: torch's own rule then applies)."""
    v = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else None


def add_model_options(p, device: str | None = None, threads: int | None = None) -> None:
    """The options that say which model to load and how: one definition for every inference command."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="model folder: a full model or a LoRA adapter (default: the bundled wafer "
                                   "expert, or $DOMAINVLM_MODEL)")
    g.add_argument("--device", type=device_name, default=device,
                   help=f"cpu, cuda, cuda:N (default: {device or 'cuda if available'})")
    g.add_argument("--dtype", choices=DTYPES, help="weights dtype (default: bfloat16 on CUDA, float32 on CPU)")
    threads = _env_threads() or threads  # a shell's OMP_NUM_THREADS=1 holds unless --threads says otherwise
    g.add_argument("--threads", type=positive_int, default=threads,
                   help=f"CPU threads for torch (default: $OMP_NUM_THREADS if set, else {threads or 'torch default'})")
    g.add_argument("--quantization", choices=["4bit", "8bit"],
                   help="load the language model quantized with bitsandbytes (vision tower unquantized)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow Python code shipped in the model folder (off: only transformers' own classes)")
    g.add_argument("--min-pixels", type=positive_int,
                   help="Qwen2-VL-family image resolution floor in pixels (default: the folder's processor)")
    g.add_argument("--max-pixels", type=positive_int,
                   help="Qwen2-VL-family image resolution cap in pixels, the image-token budget (fewer pixels: "
                        "less memory; default: the folder's processor)")


def add_sampling_options(p, max_new_tokens: int = 256) -> None:
    """Decoding options. Unset ones follow the model folder's generation_config.json (greedy when it says
    nothing); a value given here overrides it."""
    g = p.add_argument_group("sampling (unset: the model's generation_config.json; greedy when it says nothing)")
    g.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens,
                   help=f"longest answer in tokens (default {max_new_tokens})")
    g.add_argument("--temperature", type=temperature, help="0 = greedy; above 0 samples")
    g.add_argument("--top-p", type=top_p, help="nucleus sampling mass in (0, 1]")
    g.add_argument("--top-k", type=nonneg_int, help="sample among the k likeliest tokens (0 = off)")
    g.add_argument("--repetition-penalty", type=repetition_penalty, help="in (0, 10]; 1 = off")
    g.add_argument("--seed", type=seed, help="seed for sampling (reproducible answers)")


def model_question(model=None) -> str | None:
    """The question asked when the user gives none: domains.default_question of the model folder ``model``
    (None: the default model), its head read from the folder's config without loading it; None for a model
    without an answer head. A folder that cannot be read raises why: "no default question" would hide it."""
    from ..domains import default_question
    from ..models.loader import answer_head_name, default_model_dir

    return default_question(answer_head_name(model or default_model_dir(), strict=True))


def engine_from_args(args):
    from ..errors import UserError
    from ..inference.engine import Engine

    if args.min_pixels and args.max_pixels and args.min_pixels > args.max_pixels:
        raise UserError(f"--min-pixels {args.min_pixels} is above --max-pixels {args.max_pixels}")

    return Engine(args.model, device=args.device, dtype=args.dtype, quantization=args.quantization,
                  trust_remote_code=args.trust_remote_code, threads=args.threads, min_pixels=args.min_pixels,
                  max_pixels=args.max_pixels)


def sampling_from_args(args):
    from ..inference.engine import Sampling

    return Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed,
                    cut_head_answers=True)  # --max-new-tokens holds for a head's answer too


def key_from_env(var: str) -> str:
    """The secret in environment variable ``var`` (``--api-key-env``): a key there does not show in ``ps``."""
    import os

    from ..errors import UserError

    key = os.environ.get(var)
    if not key:
        raise UserError(f"--api-key-env: environment variable {var} is not set or empty")
    return key
