"""Where a fresh ``domainvlm eval`` process spends its time before and during its answers (issue 16: on a GPU a
5,703-map MixedWM38 eval answers in ~2 s once warm, so one-off start-up costs decide its rate).

One process = one row: imports, reading the records, loading the model (Engine), an optional warm-up on the
first N records (``--warmup N``, outside the answers' time), then each batch of ``evaluate_records``'s loop
(time waiting for the prefetched batch, time in ``Engine.generate``, synchronised on cuda), then scoring.

    PYTHONPATH=src python bench/eval_startup.py --device cuda --data D/mixedwm38/mixedwm38_trainval.npz \
        --split val --batch-size 2048 [--warmup 256]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=0, help="answer the first N records once before the timed loop")
    p.add_argument("--model", default=None)
    p.add_argument("--profile", type=int, default=0, help="cProfile the first batch: print its N costliest "
                   "functions (cumulative)")
    p.add_argument("--cudnn-attention", action="store_true", help="leave SDPA's cuDNN backend on while "
                   "answering (the engine's behaviour before inference/attention.py), for a before/after")
    p.add_argument("--limit", type=int, default=0, help="first N records only (a quick check)")
    a = p.parse_args(argv)
    times: dict[str, float] = {}

    def lap(name, t):
        times[name] = round(time.perf_counter() - t, 3)
        return time.perf_counter()

    t = time.perf_counter()
    import torch

    from domainvlm.data.sources import load_any
    from domainvlm.evaluate import runner
    from domainvlm.inference.engine import Engine, Sampling
    from domainvlm.models.loader import default_model_dir

    if a.cudnn_attention:
        import contextlib

        from domainvlm.inference import engine as engine_mod

        engine_mod.answering_attention = lambda device: contextlib.nullcontext()
    times["imports (from process start)"] = round(time.perf_counter() - T0, 3)
    t = time.perf_counter()
    model_dir = str(a.model or default_model_dir())
    recs = load_any(a.data, split=a.split, langs=("en",), explain=False, model_dir=model_dir)
    recs = recs[:a.limit] if a.limit else recs
    t = lap("read records", t)
    eng = Engine(model_dir, device=a.device)
    cuda = eng.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    sync()
    t = lap("load model (Engine)", t)
    base = runner.data_base_dir(a.data)
    greedy = Sampling(max_new_tokens=96, temperature=0.0)
    if a.warmup:
        convs = [c for c, _ in runner._load_batch(recs[:a.warmup], base, eng.canvas_size)]
        eng.generate(convs, greedy)
        sync()
        t = lap(f"warm-up ({a.warmup} records, outside the loop)", t)
    gen, batches = eng.generate, []

    def timed(convs, sampling=None, **kw):
        s = time.perf_counter()
        prof = None
        if a.profile and not batches:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        out = gen(convs, sampling, **kw)
        sync()
        if prof is not None:
            import pstats

            prof.disable()
            for key in ("cumulative", "tottime"):
                pstats.Stats(prof).sort_stats(key).print_stats(a.profile)
        batches.append(round(time.perf_counter() - s, 3))
        return out

    eng.generate = timed
    t_loop = time.perf_counter()
    answers = runner.generate_answers(eng, recs, base, a.batch_size, greedy, progress=False)
    loop = time.perf_counter() - t_loop
    t = lap("answer loop (eval's timer, less scoring)", t_loop)
    metrics = runner.score(recs, answers, model_dir)
    t = lap("score", t)
    times["total (from process start)"] = round(time.perf_counter() - T0, 3)
    row = {"device": str(eng.device), "cudnn_attention": a.cudnn_attention, "n": len(recs), "batch_size": a.batch_size, "warmup": a.warmup,
           "times_s": times, "generate_per_batch_s": batches, "loop_maps_per_s": round(len(recs) / loop, 1),
           "exact_match": metrics.get("exact_match"),
           "gpu": torch.cuda.get_device_name(0) if cuda else None}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
