"""Throughput of ``domainvlm eval`` and ``domainvlm predict`` on wafer maps: the host path alone, or against
``domainvlm bench``'s loop on the same engine, maps and batch size.

On a GPU the model answers thousands of maps a second; what eval and predict do on the host around it
(reading ``file.npz#i`` records, drawing the maps, batching, prompts, answer texts, metrics or result rows)
bounds their rate unless it is much faster than that.

* ``--stub`` (the default on CPU): the real commands' code (evaluate_records, predict_rows) on a real engine
  with the bundled wafer expert, the head's device work replaced by stubs (the forwards of
  ``prefers_diagnosis`` / ``diagnose`` return fixed answer sets; drawing and patchifying, which run on the
  device, are skipped). Answers are meaningless; only the host time counts.
* no stub (the default on cuda): the real model; a third row times ``domainvlm bench``'s loop
  (Engine.generate on canvases drawn beforehand, one question) on the same maps and batch size, and the
  table gives eval and predict as a share of it: the like-for-like ratio of issue 16.

    PYTHONPATH=src python bench/eval_host.py [--maps 19389] [--batch-size 1024] [--data ...npz] [--split val]
    PYTHONPATH=src python bench/eval_host.py --device cuda --batch-size 2048 --split val

The stubbed run also works against older code (PYTHONPATH=<old checkout>/src) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/mixedwm38/mixedwm38_trainval.npz"
QUESTION = "What defect pattern does this wafer map show?"


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


def _sync(engine):
    import torch

    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def time_eval(engine, recs, base, batch_size: int) -> float:
    from domainvlm.evaluate.runner import evaluate_records

    _sync(engine)
    t = time.perf_counter()
    evaluate_records(engine, recs, base, batch_size, None, progress=False)
    _sync(engine)
    return time.perf_counter() - t


def time_predict(engine, refs: list[str], batch_size: int) -> float:
    from domainvlm.commands.predict import predict_rows
    from domainvlm.inference.batch_io import ResultWriter, read_inputs
    from domainvlm.inference.engine import Sampling

    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.jsonl"
        inp.write_text("".join(json.dumps({"id": str(i), "image": ref, "question": QUESTION}) + "\n"
                               for i, ref in enumerate(refs)))
        _sync(engine)
        t = time.perf_counter()
        writer = ResultWriter(Path(tmp) / "out.jsonl", overwrite=True)
        try:
            predict_rows(engine, read_inputs(inp), writer, Sampling(), batch_size)
        finally:
            writer.close()
        _sync(engine)
        return time.perf_counter() - t


def time_bench(engine, recs, batch_size: int) -> float:
    """domainvlm bench's throughput loop (inference/bench.throughput) on the same maps, one pass, warmed up."""
    from PIL import Image

    from domainvlm.domains.wafer.canvas import canvas_batch, canvas_rgb
    from domainvlm.domains.wafer.sources import get_map
    from domainvlm.inference.bench import throughput

    maps = []
    for r in recs:  # the records' own maps (absolute file#N references)
        path, _, i = r.images[0].rpartition("#")
        maps.append(get_map(path, int(i)))
    images = [Image.fromarray(a) for a in canvas_rgb(canvas_batch(maps, engine.canvas_size))]
    res = throughput(engine, images, QUESTION, batch_size, repeats=1)
    return len(recs) / res["maps_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--split", help="only this split (e.g. val)")
    p.add_argument("--maps", type=int, default=19389, help="at most this many maps")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--stub", action=argparse.BooleanOptionalAction, default=None,
                   help="stub the device work out (default: on CPU yes, on cuda no)")
    p.add_argument("--label", default="", help="name of the code version in the table")
    args = p.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    import domainvlm
    from domainvlm.data.sources import load_any
    from domainvlm.inference.bench import machine
    from domainvlm.inference.engine import Engine

    torch.set_num_threads(args.threads)
    stub = args.stub if args.stub is not None else args.device == "cpu"
    engine = Engine(None, device=args.device)
    if stub:
        stub_device(engine)
    t = time.perf_counter()
    recs = load_any(args.data, split=args.split, langs=("en",), explain=False)[: args.maps]
    t_read = time.perf_counter() - t
    n, base = len(recs), Path(args.data).parent
    try:  # as the eval and predict commands run their batches
        from domainvlm.inference.prefetch import frozen_heap
    except ImportError:  # older code
        from contextlib import nullcontext as frozen_heap
    if not stub:  # warm-up (kernels, prompt cache) outside the timers, as bench does
        time_eval(engine, recs[: args.batch_size], base, args.batch_size)
    with frozen_heap():
        rows = [("eval: read records (load_any, before eval's timer)", t_read),
                ("eval: load + answer + score (evaluate_records)", time_eval(engine, recs, base, args.batch_size)),
                ("predict: read rows + load + answer + write (predict_rows)",
                 time_predict(engine, [r.images[0] for r in recs], args.batch_size))]
        if not stub:
            rows.append(("bench: Engine.generate on drawn canvases (domainvlm bench's loop)",
                         time_bench(engine, recs, args.batch_size)))
    src = Path(domainvlm.__file__).resolve().parents[1]
    dtype = next(engine.model.parameters()).dtype
    tab = Table(title=f"eval/predict {'host path, model stubbed' if stub else 'with the model'}: {n} maps, "
                      f"batch {args.batch_size}, {engine.device}, {dtype}{', ' + args.label if args.label else ''}",
                caption=f"{machine()}; code {src}")
    for c in ("stage", "seconds", "maps/s") + (() if stub else ("share of bench",)):
        tab.add_column(c, justify="left" if c == "stage" else "right")
    for k, (name, s) in enumerate(rows):
        share = () if stub else ("" if k == 0 else f"{rows[-1][1] / s:.0%}",)
        tab.add_row(name, f"{s:.2f}", f"{n / s:,.0f}", *share)
    Console(width=150).print(tab)
    print(json.dumps({"maps": n, "batch_size": args.batch_size, "device": str(engine.device), "stub": stub,
                      **{name.split(":")[0] + "_maps_per_s": round(n / s, 1) for name, s in rows[1:]},
                      "code": str(src)}), file=sys.stderr)


if __name__ == "__main__":
    main()
