"""Choose the wafer head's ``diagnosis_more_bias`` on val: exact match / macro-F1 for a range of biases.

The bias is added to the " +" logit at every decision of the constrained diagnosis line (a prior towards one
more pattern; domains/wafer/head.py). Each val batch is prefilled once and decoded once per bias. Prints a
table and the bias with the best recipe score, mean(MixedWM38 exact match, WM-811K macro-F1); ``--write``
stores it in the model's config.json (``domainvlm.diagnosis_more_bias``). CPU, float32, English questions
chosen as `domainvlm eval` does. Selecting on val makes the val numbers slightly optimistic.

    python bench/wafer_bias.py --biases 0,0.5,1,1.5,2 [--model DIR] [--limit N] [--write]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = {"mixedwm38": "mixedwm38/mixedwm38_trainval.npz", "wm811k": "wm811k/wm811k_trainval.npz"}


def main() -> None:
    from domainvlm.domains.wafer.instruct import QUESTIONS
    from domainvlm.domains.wafer.sources import load_wafer_file
    from domainvlm.domains.wafer.metrics import wafer_metrics
    from domainvlm.domains.wafer.head import WaferHead
    from domainvlm.io import write_json
    from domainvlm.models.loader import default_model_dir, load_model
    from domainvlm.domains.wafer.expert_data import MapBank, PixelMaker

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the bundled wafer expert)")
    p.add_argument("--biases", default="0,0.5,1,1.5,2")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--limit", type=int, default=0, help="first N val maps per set only")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--write", action="store_true", help="store the best bias in the model's config.json")
    args = p.parse_args()
    biases = [float(b) for b in args.biases.split(",")]
    torch.set_num_threads(2)
    model, proc = load_model(args.model or default_model_dir())
    model.eval()
    head, px = WaferHead(model, proc), PixelMaker(proc, model.device)
    prefill, memo = head._prefill, {}  # memo: this batch's prefill, emptied when the next batch starts

    def cached_prefill(pv, g, seqs):  # one prefill per batch; each bias decodes from its own copy of the cache
        if not memo:
            memo["out"] = prefill(pv, g, seqs)
        out, att, pos = memo["out"]
        out = copy.copy(out)
        for k in ("cache", "past_key_values"):
            if getattr(out, k, None) is not None:
                out[k] = copy.deepcopy(getattr(out, k))
        return out, att, pos

    head._prefill = cached_prefill
    res = {b: {} for b in biases}
    for name in ("mixedwm38", "wm811k"):
        bank = MapBank(load_wafer_file(Path(args.data_root) / DATA[name]).select("val"), head.size, model.device, name)
        n = min(args.limit or len(bank), len(bank))
        preds, rng, t0 = {b: [] for b in biases}, random.Random(0), time.time()
        for s in range(0, n, args.batch_size):
            e = min(n, s + args.batch_size)
            msgs = [[{"role": "user", "content": "<image>\n" + rng.choice(QUESTIONS["en"])}] for _ in range(s, e)]
            pv, g = px(bank.canvas[s:e])
            prompts = [head.prompt_ids(m) for m in msgs]
            memo.clear()
            for b in biases:
                head.more_bias = b
                with torch.inference_mode():
                    preds[b] += head.diagnose(pv, g, prompts, ["en"] * (e - s))
            print(f"{name}: {e}/{n} maps ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        for b in biases:
            m = wafer_metrics(bank.defects[:n], preds[b], bank.taxonomy)
            res[b][name] = {k: m[k] for k in ("exact_match", "macro_f1", "unparsed_rate")}
    print("| bias | MixedWM38 exact match | WM-811K macro-F1 | WM-811K exact match | score |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for b in biases:
        r = res[b]
        r["score"] = (r["mixedwm38"]["exact_match"] + r["wm811k"]["macro_f1"]) / 2
        print(f"| {b:g} | {r['mixedwm38']['exact_match']:.4f} | {r['wm811k']['macro_f1']:.4f} | "
              f"{r['wm811k']['exact_match']:.4f} | {r['score']:.4f} |")
    best = max(biases, key=lambda b: (res[b]["score"], -abs(b)))
    print(json.dumps({"best_bias": best, "results": {str(b): r for b, r in res.items()}}))
    if args.write:
        path = Path(args.model or default_model_dir()) / "config.json"
        cfg = json.loads(path.read_text())
        cfg.setdefault("domainvlm", {})["diagnosis_more_bias"] = best
        write_json(path, cfg)
        print(f"wrote diagnosis_more_bias={best:g} to {path}")


if __name__ == "__main__":
    main()
