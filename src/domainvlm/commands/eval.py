"""`domainvlm eval`: measured accuracy of a model on labelled data -> metrics.json (+ PNG, predictions)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..io import resolve_path
from ._args import add_model_options, add_sampling_options, engine_from_args, positive_int, sampling_from_args

NAME = "eval"
HELP = "evaluate a model on labelled data (wafer: exact match, F1, confusion; reports: BLEU..CIDEr, CE-F1)"


def add_arguments(p):
    p.add_argument("--data", required=True, help="record JSONL or a raw source (npz, annotation.json, ...)")
    p.add_argument("--split", help="only records of this split (e.g. val)")
    p.add_argument("--image-root", help="folder that relative image paths are relative to (default: the data "
                   "file's folder; LLaVA's --image_folder)")
    p.add_argument("--limit", type=positive_int, help="first N records only")
    p.add_argument("--sample", type=positive_int, help="a seeded random N records (sources grouped by class "
                                                       "make a prefix unrepresentative)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--out", required=True, help="metrics.json path")
    p.add_argument("--predictions", help="also write per-record answers (JSONL)")
    p.add_argument("--batch-size", type=positive_int,
                   help="records per batch (default 1024 on a GPU with an answer head, else 32)")
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="question language for raw sources (wafer npz, labelled image folders)")
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--taxonomy", help="raw sources with a taxonomy (labelled image folders / CSV, a labels CSV of "
                   "wafer-map files, a labelled wafer npz): a taxonomy YAML/JSON or model folder, as for data build "
                   "(default: the model's taxonomy.json where the domain reads with it)")
    p.add_argument("--facts-limit", type=int, default=200, help="maps asked the fact questions (yield, failing "
                   "dies, worst zone) for the 'facts' block, where the domain has one (wafer); 0 = none")
    p.add_argument("--tta", action="store_true", help="test-time augmentation where the answer head has it "
                   "(wafer: the mean of the 8 dihedral views' line probabilities; 8x the compute)")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)
    add_sampling_options(p, max_new_tokens=96)


def run(args):
    from .. import domains
    from ..data.sources import load_any
    from ..errors import UserError
    from ..evaluate.runner import evaluate_records, task_of
    from ..evaluate.summary import print_summary
    from ..io import write_json, write_jsonl

    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory, give a file name such as metrics.json")
    if args.image_root and not Path(args.image_root).is_dir():
        raise UserError(f"--image-root {args.image_root}: not a folder")
    from ..models.loader import default_model_dir

    model_dir = str(args.model or default_model_dir())
    recs = load_any(args.data, split=args.split, allow_pickle=args.allow_pickle, langs=(args.lang,),
                    explain=False, image_root=args.image_root, taxonomy=args.taxonomy, model_dir=model_dir)
    from ..evaluate.for_model import records_for_model

    recs = records_for_model(recs, model_dir, args.data, (args.lang,), args.taxonomy)
    if args.limit:
        recs = recs[: args.limit]
    from ..evaluate.runner import sample_records

    recs = sample_records(recs, args.sample, args.sample_seed)
    if not recs:
        raise UserError(f"{args.data}: no records to evaluate" + (f" in split {args.split!r}" if args.split else ""))
    try:
        task_of(recs)
    except UserError as e:
        raise UserError(f"{args.data}: {e}") from None
    check = domains.get(task_of(recs)).extra.get("check_records")  # e.g. a class the model does not know:
    if check is not None:                                            # said before the model is loaded
        check(recs, model_dir)
    base = resolve_path(args.image_root) if args.image_root else resolve_path(args.data).parent
    from ..evaluate.runner import check_images_found

    check_images_found(recs, base)  # a wrong image root: said before the model loads
    from ..inference.prefetch import default_batch_size, frozen_heap

    eng = engine_from_args(args)
    if args.tta:
        if not hasattr(eng.answer_head, "tta"):
            raise UserError(f"--tta: model {eng.model_dir} has no answer head with test-time augmentation")
        eng.answer_head.tta = True
    from ..evaluate import confidence_eval

    head = confidence_eval.confidence_head(eng)  # confidence measured whenever the head gives one
    answers: list = []
    bs = args.batch_size or default_batch_size(eng, 32)
    with frozen_heap():  # its one full collection before the timer
        t0 = time.perf_counter()
        metrics, rows = evaluate_records(eng, recs, base, bs,
                                         _greedy_unless_asked(sampling_from_args(args)), progress=not args.quiet,
                                         answers_out=answers)
        secs = time.perf_counter() - t0
    conf = confidence_eval.block(recs, answers, getattr(getattr(head, "calibration", None), "threshold", None),
                                 head) if head is not None else None
    if conf is not None:
        metrics["confidence"] = conf
        confidence_eval.write_plot(metrics, out)
    metrics.update({"model": str(eng.model_dir), "data": str(args.data), "split": args.split,
                    "seconds": round(secs, 2), "records_per_s": round(len(recs) / secs, 2),
                    "device": str(eng.device), "batch_size": bs, "tta": bool(getattr(eng.answer_head, "tta", False)),
                    "dtype": str(next(eng.model.parameters()).dtype)})  # for a like-for-like with bench
    dom = domains.get(task_of(recs))
    if dom.extra.get("eval_facts") is not None and args.facts_limit > 0:  # the answers to fact questions
        metrics["facts"] = dom.extra["eval_facts"](eng, recs, base, args.facts_limit)
    if dom.eval_artifacts is not None:  # e.g. the wafer confusion PNG beside metrics.json
        dom.eval_artifacts(metrics, out)
    write_json(out, metrics)
    if args.predictions:
        write_jsonl(args.predictions, rows)
    if dom.summary is not None:
        print(dom.summary(metrics))
    else:
        print_summary(metrics)
    brief = {k: metrics[k] for k in ("n", "exact_match", "macro_f1", "bleu_4", "ce_f1_micro", "unparsed", "seconds")
             if k in metrics}
    if conf is not None:
        brief |= {f"confidence_{k}": round(conf[k], 5) for k in ("ece", "brier", "accuracy_at_coverage_95",
                                                                  "accuracy_at_coverage_90", "abstain_rate")
                  if k in conf}
    print(json.dumps(brief))
    if metrics.get("errors"):  # like predict: the run finishes, the failures are named, the exit says so
        import sys

        for e in metrics["errors"][:5]:
            print(f"domainvlm: {e}", file=sys.stderr)
        print(f"domainvlm: {len(metrics['errors'])} record(s) could not be read and count as wrong; see "
              f"'errors' in {out}", file=sys.stderr)
        return 1
    return 0


def _greedy_unless_asked(s):
    """Metrics must be reproducible: greedy unless --temperature is given (a base's generation_config may
    say do_sample; its other settings, e.g. repetition_penalty, still apply)."""
    from dataclasses import replace

    return s if s.temperature is not None else replace(s, temperature=0.0)
