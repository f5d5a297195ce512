"""`domainvlm bench`: CPU latency for one map (batch 1) and batched throughput, printed as a table."""

from __future__ import annotations

import argparse

from ._args import add_model_options, add_sampling_options, engine_from_args, out_file, positive_int, sampling_from_args

NAME = "bench"
HELP = "measure answer latency (batch 1) and batched throughput of a model on wafer maps"


def add_arguments(p):
    p.add_argument("--source", help="wafer npz to take (val) maps from (default: synthetic maps)")
    p.add_argument("--runs", type=positive_int, default=100, help="batch-1 runs for the latency percentiles")
    p.add_argument("--batch-size", type=positive_int, action="append",
                   help="throughput batch size(s); repeatable (default 32 on CPU, 2048 on GPU)")
    p.add_argument("--maps", type=positive_int, help="maps per throughput pass (default 4x the batch size)")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency measurement")
    p.add_argument("--evidence", action="store_true", help="latency includes the answer head's evidence (where "
                   "each named pattern lies; the wafer expert)")
    p.add_argument("--question", default="What defect pattern does this wafer map show?")
    p.add_argument("--out", type=out_file, help="also write the results as JSON")
    p.add_argument("--confidence", action=argparse.BooleanOptionalAction, default=None,
                   help="score every valid answer line for the calibrated confidence (default: as the model "
                        "folder says: on when it has a stored abstention threshold)")
    add_model_options(p, device="cpu", threads=2)
    add_sampling_options(p)


def run(args):
    import json

    import torch

    from .. import domains
    from ..errors import UserError
    from ..inference.bench import latency, machine, throughput
    from ..io import write_json

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device visible to torch")
    sizes = args.batch_size or ([2048] if args.device.startswith("cuda") else [32])
    n = max([args.maps or 4 * b for b in sizes] + [args.runs])
    images = domains.get("wafer").extra["bench_images"](n, args.source)  # wafer maps (see HELP)
    eng = engine_from_args(args)
    head = eng.answer_head
    if args.confidence is not None and hasattr(head, "confidence"):
        head.confidence = args.confidence
    s = sampling_from_args(args)
    res = {"machine": machine(), "device": str(eng.device), "threads": torch.get_num_threads(),
           "model": str(eng.model_dir), "dtype": str(next(eng.model.parameters()).dtype),
           "source": args.source or "synthetic", "confidence": _confidence_on(head), "rows": []}
    then = getattr(eng.answer_head, "evidence_for", None) if args.evidence and eng.has_head else None
    if args.evidence and then is None:
        raise UserError(f"--evidence: model {eng.model_dir} has no answer head that gives evidence")
    if not args.no_latency:
        what = "latency, batch 1" + (" + evidence" if then else "")
        res["rows"].append({"what": what, **latency(eng, images, args.question, args.runs, sampling=s, then=then)})
    for b in sizes:
        imgs = images[: args.maps or 4 * b]
        res["rows"].append({"what": f"throughput, batch {b}", **throughput(eng, imgs, args.question, b, sampling=s)})
    _table(res)
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res))
    return 0


def _confidence_on(head) -> bool | None:
    """Whether the head scores confidence in this run (None: the model has no such head)."""
    if head is None or not hasattr(head, "assess"):
        return None
    on = getattr(head, "scores_confidence", None)  # heads that can skip the scoring say whether they do
    return bool(on()) if callable(on) else True


def _table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    conf = {True: ", confidence on", False: ", confidence off"}.get(res.get("confidence"), "")
    threads = f"{res['threads']} thread{'' if res['threads'] == 1 else 's'}"
    t = Table(title=f"domainvlm bench: {res['device']}, {threads}, {res['dtype']}{conf}",
              caption=res["machine"])
    for c in ("measurement", "p50 ms", "p95 ms", "maps/s"):
        t.add_column(c, justify="left" if c == "measurement" else "right")
    for r in res["rows"]:
        t.add_row(r["what"], str(r.get("p50_ms", "")), str(r.get("p95_ms", "")), str(r.get("maps_per_s", "")))
    Console(stderr=True).print(t)
