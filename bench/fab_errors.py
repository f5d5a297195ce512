"""Where a fab-taxonomy model misses its new classes: per class precision / recall on a held-back labelled-map
npz, split by map size (MixedWM38's 52 vs WM-811K-like sizes) and by alone / mixed; for Reticle-Repeat also a
model-free lattice check (how periodic the fail dies are at pitches 3..8), so a miss can be told apart as
"the map shows a lattice the model did not see" (the model decides) or "no lattice visible" (the generator).

    python bench/fab_errors.py MODEL_DIR runs/fab-data-n200/test.npz [--limit N] \
        [--old ../shared/data/mixedwm38/mixedwm38_trainval.npz --old-limit 500]

``--old``: also the old val maps (MixedWM38 / WM-811K npz; ``--old-limit`` spread evenly, 0 = all) whose answer
names a new class, counted by their gold class (on the N = 50 CPU model: MixedWM38's Normal maps as Reticle-Repeat).

Prints tables; CPU or GPU (whichever torch sees).
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

import numpy as np
import torch



def _shift_overlap(f, dy, dx):
    h, w = f.shape
    a = f[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    b = f[max(0, dy):h - max(0, -dy) or None, max(0, dx):w - max(0, -dx) or None]
    return (a & b).sum() / max(1, f.sum())


def lattice_contrast(m) -> float:
    """How much more often a fail die repeats at the best pitch (3..8, rows and columns) than at its
    neighbouring offsets: ~0 for no lattice, ~0.5-0.9 for a clear reticle grid."""
    f = np.asarray(m) == 2
    best = []
    for axis in (0, 1):
        at = {p: _shift_overlap(f, *((p, 0) if axis == 0 else (0, p))) for p in range(2, 10)}
        best.append(max(at[p] - 0.5 * (at[p - 1] + at[p + 1]) for p in range(3, 9)))
    return float(min(best))


def predictions(model_dir: str, ws, limit: int, source: str = "custom") -> list[tuple]:
    from domainvlm.domains.wafer.expert_data import MapBank, PixelMaker, class_names
    from domainvlm.domains.wafer.head import WaferHead
    from domainvlm.domains.wafer.instruct import QUESTIONS
    from domainvlm.domains.wafer.taxonomy import for_model_dir
    from domainvlm.models.loader import load_model

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, proc = load_model(model_dir, device=dev, dtype="float32")
    tax = for_model_dir(model_dir)
    head = WaferHead(model.eval(), proc, tax)
    bank = MapBank(ws, model.config.domainvlm.get("image_size", 224), torch.device(dev), source,
                   class_names(tax), tax)
    px, rng, out = PixelMaker(proc, torch.device(dev)), random.Random(0), []
    n = min(limit or len(bank), len(bank))
    with torch.no_grad():
        for s in range(0, n, 256):
            e = min(n, s + 256)
            msgs = [[{"role": "user", "content": "<image>\n" + rng.choice(QUESTIONS["en"])}] for _ in range(s, e)]
            pv, g = px(bank.canvas[s:e])
            out += head.diagnose(pv, g, [head.prompt_ids(m) for m in msgs], ["en"] * (e - s))
    return [tuple(p or ()) for p in out]


def main(argv=None) -> int:
    from domainvlm.domains.wafer.labelled import load_labelled_npz
    from domainvlm.domains.wafer.taxonomy import for_model_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--old", action="append", default=[], help="MixedWM38 / WM-811K npz: its val maps")
    p.add_argument("--old-limit", type=int, default=0)
    a = p.parse_args(argv)
    tax = for_model_dir(a.model)
    ws = load_labelled_npz(a.data, tax)
    preds = predictions(a.model, ws, a.limit)
    gold = [tuple(d) for d in ws.defects[:len(preds)]]
    new = [c for c in tax.names if c in {x for d in gold for x in d} and c in ("Reticle-Repeat", "Probe-Card",
                                                                               "Notch-Cluster")] or tax.names
    print("| class | maps | part | tp | fn | fp | recall | precision |\n|---|---|---|---:|---:|---:|---:|---:|")
    for c in new:
        for part, keep in (("all", lambda m, d: True), ("size 52", lambda m, d: np.shape(m)[0] == 52),
                           ("other sizes", lambda m, d: np.shape(m)[0] != 52), ("alone", lambda m, d: len(d) == 1),
                           ("mixed", lambda m, d: len(d) > 1)):
            idx = [i for i, (m, d) in enumerate(zip(ws.maps, gold)) if keep(m, d)]
            tp = sum(c in gold[i] and c in preds[i] for i in idx)
            fn = sum(c in gold[i] and c not in preds[i] for i in idx)
            fp = sum(c not in gold[i] and c in preds[i] for i in idx)
            print(f"| {c} | {sum(c in gold[i] for i in idx)} | {part} | {tp} | {fn} | {fp} | "
                  f"{tp / max(1, tp + fn):.3f} | {tp / max(1, tp + fp):.3f} |")
    if "Reticle-Repeat" in new:
        rr = [i for i, d in enumerate(gold) if "Reticle-Repeat" in d]
        other = [lattice_contrast(m) for m, d in zip(ws.maps, gold) if "Reticle-Repeat" not in d]
        thr = float(np.quantile(other, 0.99)) if other else 0.0
        miss = [i for i in rr if "Reticle-Repeat" not in preds[i]]
        visible = [i for i in miss if lattice_contrast(ws.maps[i]) > thr]
        print(f"\nReticle-Repeat: {len(miss)} of {len(rr)} missed; lattice visible (contrast above the 99th "
              f"percentile of the other maps, {thr:.3f}) in {len(visible)} of the misses")
        print("missed as:", dict(Counter("+".join(preds[i]) or "Normal" for i in miss).most_common(8)))
        fps = [i for i, d in enumerate(gold) if "Reticle-Repeat" not in d and "Reticle-Repeat" in preds[i]]
        print("false Reticle-Repeat on:", dict(Counter("+".join(gold[i]) or "Normal" for i in fps).most_common(8)))
        sizes = Counter(np.shape(ws.maps[i])[0] // 8 * 8 for i in miss)
        print("missed by size (bins of 8 dies):", dict(sorted(sizes.items())))
    for path in a.old:
        old_new_class_answers(a.model, path, a.old_limit, set(new))
    return 0


def old_new_class_answers(model_dir: str, path: str, limit: int, new: set) -> None:
    """Old val maps whose answer names a new class, by gold class (their gold never has one)."""
    from domainvlm.domains.wafer.expert import _head
    from domainvlm.domains.wafer.sources import load_wafer_file

    ws = load_wafer_file(path)
    val = _head(ws.select("val"), limit, spread=True)
    preds = predictions(model_dir, val, 0, ws.source)
    hits = Counter(("+".join(d) or "none", "+".join(p)) for d, p in zip(val.defects, preds) if new & set(p))
    print(f"\n{path}: {sum(hits.values())} of {len(preds)} val maps answered with a new class")
    for (g, p_), n in hits.most_common(10):
        print(f"  {n} x gold {g} -> {p_}")


if __name__ == "__main__":
    raise SystemExit(main())
