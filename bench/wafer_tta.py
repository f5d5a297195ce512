"""Experiment: does dihedral test-time augmentation help the bundled wafer expert? (not used by `ask`/`eval`)

Each val map is diagnosed in its 8 rotations/mirrors (the training augmentation) through the constrained head;
the vote takes the most frequent defect set (ties: the unrotated view's). Prints exact match / macro-F1 for
the first 1, 2, 4 and 8 views. CPU, float32, English questions chosen as `domainvlm eval` does.

    python bench/wafer_tta.py --sets mixedwm38 [--limit N]     # ~22 min on 2 CPU threads for MixedWM38 val
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
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
    from domainvlm.models.loader import load_model
    from domainvlm.domains.wafer.expert_data import MapBank, PixelMaker, dihedral_batch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="mixedwm38,wm811k")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--limit", type=int, default=0, help="first N val maps only")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(2)
    model, proc = load_model()
    model.eval()
    head, px = WaferHead(model, proc), PixelMaker(proc, model.device)
    size = head.size
    for name in args.sets.split(","):
        bank = MapBank(load_wafer_file(Path(args.data_root) / DATA[name]).select("val"), size, model.device, name)
        n = min(args.limit or len(bank), len(bank))
        key = lambda d: None if d is None else tuple(sorted(d))  # noqa: E731
        views, t0 = [], time.time()
        for k in range(8):
            rng, preds = random.Random(0), []
            for s in range(0, n, args.batch_size):
                e = min(n, s + args.batch_size)
                msgs = [[{"role": "user", "content": "<image>\n" + rng.choice(QUESTIONS["en"])}] for _ in range(s, e)]
                pv, g = px(dihedral_batch(bank.canvas[s:e], torch.full((e - s,), k, dtype=torch.long)))
                with torch.inference_mode():
                    preds += head.diagnose(pv, g, [head.prompt_ids(m) for m in msgs], ["en"] * (e - s))
            views.append([key(d) for d in preds])
            em = wafer_metrics(bank.defects[:n], preds, bank.taxonomy)["exact_match"]
            print(f"{name} view {k}: exact match {em:.4f} ({time.time() - t0:.0f} s)", flush=True)
        print(f"| {name} | views | exact match | macro-F1 |\n| --- | ---: | ---: | ---: |")
        for nv in (1, 2, 4, 8):
            vote = []
            for i in range(n):
                cnt = Counter(v[i] for v in views[:nv])
                first = views[0][i]
                vote.append(first if cnt[first] == max(cnt.values()) else cnt.most_common(1)[0][0])
            m = wafer_metrics(bank.defects[:n], vote, bank.taxonomy)
            print(f"| {name} | {nv} | {m['exact_match']:.4f} | {m['macro_f1']:.4f} |")


if __name__ == "__main__":
    main()
