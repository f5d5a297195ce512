"""`domainvlm eval`: measured accuracy of a model on labelled data -> metrics.json (+ PNG, predictions)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ._args import positive_int

NAME = "eval"
HELP = "evaluate a model on labelled data (wafer: exact match, F1, confusion; reports: BLEU..CIDEr, CE-F1)"


def add_arguments(p):
    p.add_argument("--model", help="model folder (default: the bundled wafer expert)")
    p.add_argument("--data", required=True, help="record JSONL or a raw source (npz, annotation.json, ...)")
    p.add_argument("--split", help="only records of this split (e.g. val)")
    p.add_argument("--image-root", help="folder that relative image paths are relative to (default: the data "
                   "file's folder; LLaVA's --image_folder)")
    p.add_argument("--limit", type=positive_int, help="first N records only")
    p.add_argument("--out", required=True, help="metrics.json path")
    p.add_argument("--predictions", help="also write per-record answers (JSONL)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-new-tokens", type=positive_int, default=96)
    p.add_argument("--lang", choices=["en", "zh"], default="en",
                   help="question language for raw sources (wafer npz, labelled image folders)")
    p.add_argument("--device")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--quiet", action="store_true")


def run(args):
    from ..data.sources import load_any
    from ..errors import UserError
    from ..evaluate.runner import evaluate_records, task_of
    from ..evaluate.summary import print_summary
    from ..inference.engine import Engine, Sampling
    from ..io import write_json, write_jsonl

    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory, give a file name such as metrics.json")
    if args.image_root and not Path(args.image_root).is_dir():
        raise UserError(f"--image-root {args.image_root}: not a folder")
    recs = load_any(args.data, split=args.split, allow_pickle=args.allow_pickle, langs=(args.lang,),
                    explain=False, image_root=args.image_root)
    if args.limit:
        recs = recs[: args.limit]
    if not recs:
        raise UserError(f"{args.data}: no records to evaluate" + (f" in split {args.split!r}" if args.split else ""))
    try:
        task_of(recs)
    except UserError as e:
        raise UserError(f"{args.data}: {e}") from None
    base = Path(args.image_root).resolve() if args.image_root else Path(args.data).resolve().parent
    eng = Engine(args.model, device=args.device, threads=args.threads)
    t0 = time.perf_counter()
    metrics, rows = evaluate_records(eng, recs, base, args.batch_size,
                                     Sampling(max_new_tokens=args.max_new_tokens), progress=not args.quiet)
    secs = time.perf_counter() - t0
    metrics.update({"model": str(eng.model_dir), "data": str(args.data), "split": args.split,
                    "seconds": round(secs, 2), "records_per_s": round(len(recs) / secs, 2),
                    "device": str(eng.device)})
    if metrics.get("task") == "wafer":
        from ..evaluate.plots import plot_confusion

        png = out.with_suffix(".confusion.png")
        plot_confusion(metrics["confusion"], png, f"{Path(args.data).name} {args.split or ''} n={len(recs)}")
        metrics["confusion_png"] = str(png)
    else:  # [classify hook] a registered domain's own artifacts (classify: the confusion PNG)
        from ..domains import all_domains

        for d in all_domains():
            if d.name == metrics.get("task") and d.eval_artifacts is not None:
                d.eval_artifacts(metrics, out)
    write_json(out, metrics)
    if args.predictions:
        write_jsonl(args.predictions, rows)
    print_summary(metrics)
    print(json.dumps({k: metrics[k] for k in ("n", "exact_match", "macro_f1", "bleu_4", "ce_f1_micro",
                                              "unparsed", "seconds") if k in metrics}))
    return 0
