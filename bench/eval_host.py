"""Host-side throughput of ``domainvlm eval`` and ``domainvlm predict`` on wafer maps, the model stubbed out.

On a GPU the model answers thousands of maps a second (``domainvlm bench``); what eval and predict do on the
host around it (reading ``file.npz#i`` records, drawing the maps, batching, prompts, answer texts, metrics or
result rows) bounds their rate unless it is much faster than that. This times exactly that host path: the
real commands' code (evaluate_records, predict_rows) on a real engine and the bundled wafer expert, with the
head's device work replaced by stubs (the vision tower / LM forwards of ``prefers_diagnosis`` and
``diagnose`` return fixed answer sets, and drawing / patchifying, which run on the device, are skipped). The
answers are therefore meaningless; only the time counts. Prints a table of maps/s.

    PYTHONPATH=src python bench/eval_host.py [--maps 19389] [--batch-size 1024] [--data ...mixedwm38.npz]

The same script runs against older code (PYTHONPATH=<old checkout>/src) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/mixedwm38/mixedwm38_trainval.npz"


def stub_device(engine) -> None:
    """Replace the head's device work (forwards, drawing, patches) by constant-time stubs."""
    import torch

    from domainvlm.domains.wafer import head as head_mod

    head = engine.answer_head
    sets = head.tax.answer_sets()
    head.prefers_diagnosis = lambda pv, g, prompts: [True] * len(prompts)
    head.diagnose = lambda pv, g, prompts, langs: [sets[i % len(sets)] for i in range(len(prompts))]
    head_mod.patchify = lambda x, **kw: x  # patches are cut on the device (on a GPU)
    if hasattr(head_mod, "canvas_pixels"):  # die grids are drawn on the device
        head_mod.canvas_pixels = lambda head, grids: (torch.zeros(1), torch.zeros(1))


def time_eval(engine, data: str, n: int, batch_size: int) -> tuple[float, float]:
    from domainvlm.data.sources import load_any
    from domainvlm.evaluate.runner import evaluate_records

    t = time.perf_counter()
    recs = load_any(data, langs=("en",), explain=False)[:n]
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    evaluate_records(engine, recs, Path(data).parent, batch_size, None, progress=False)
    return t_read, time.perf_counter() - t


def time_predict(engine, data: str, n: int, batch_size: int) -> float:
    from domainvlm.commands.predict import predict_rows
    from domainvlm.inference.batch_io import ResultWriter, read_inputs

    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.jsonl"
        with open(inp, "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": str(i), "image": f"{data}#{i}",
                                     "question": "What defect pattern does this wafer map show?"}) + "\n")
        t = time.perf_counter()
        rows = read_inputs(inp)
        writer = ResultWriter(Path(tmp) / "out.jsonl", overwrite=True)
        try:
            from domainvlm.inference.engine import Sampling

            predict_rows(engine, rows, writer, Sampling(), batch_size)
        finally:
            writer.close()
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--maps", type=int, default=19389)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--label", default="", help="name of the code version in the table")
    args = p.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    import domainvlm
    from domainvlm.inference.bench import machine
    from domainvlm.inference.engine import Engine

    torch.set_num_threads(args.threads)
    engine = Engine(None, device="cpu")
    stub_device(engine)
    t_read, t_eval = time_eval(engine, args.data, args.maps, args.batch_size)
    t_pred = time_predict(engine, args.data, args.maps, args.batch_size)
    src = Path(domainvlm.__file__).resolve().parents[1]
    t = Table(title=f"eval/predict host path, model stubbed: {args.maps} maps, batch {args.batch_size}"
                    f"{', ' + args.label if args.label else ''}", caption=f"{machine()}; code {src}")
    for c in ("stage", "seconds", "maps/s"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for name, s in (("eval: read records (load_any, before the timer)", t_read),
                    ("eval: load + answer + score (evaluate_records)", t_eval),
                    ("predict: read rows + load + answer + write (predict_rows)", t_pred)):
        t.add_row(name, f"{s:.2f}", f"{args.maps / s:,.0f}")
    Console().print(t)
    print(json.dumps({"maps": args.maps, "batch_size": args.batch_size, "read_s": round(t_read, 3),
                      "eval_maps_per_s": round(args.maps / t_eval, 1),
                      "predict_maps_per_s": round(args.maps / t_pred, 1), "code": str(src),
                      "cpus": os.cpu_count()}), file=sys.stderr)


if __name__ == "__main__":
    main()
