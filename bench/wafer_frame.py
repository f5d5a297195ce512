"""Does the bundled expert's diagnosis survive a change of the map's frame? (why the fab map readers keep it)

MixedWM38 maps are 52x52 with an empty first row and column. A fab file that lists only tested dies (STDF,
KLARF without wafer size) gives the dies' bounding box instead (51x51). This prints, for N random MixedWM38
val maps, how often the diagnosis stays the same when the map is cropped to its dies, cropped and re-padded
on the other side (the same 52x52 size, shifted one die), or padded by one die all round; and exact match
against the labels for each variant.

    python bench/wafer_frame.py [--n 60] [--seed 0] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def variants(m: np.ndarray) -> dict:
    r, c = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    crop = m[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
    return {"as published (52x52)": m, "dies' bounding box": crop,
            "bounding box, border on the other side": np.pad(crop, ((0, 52 - crop.shape[0]), (0, 52 - crop.shape[1]))),
            "one-die border all round": np.pad(crop, 1)}


def main() -> None:
    from domainvlm.data.record import IMAGE_TOKEN
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.sources import load_wafer_file
    from domainvlm.domains.wafer.knowledge import parse_diagnosis
    from domainvlm.inference.engine import Engine, Sampling

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mixedwm38/mixedwm38_trainval.npz"))
    a = ap.parse_args()
    ws = load_wafer_file(a.data).select("val")
    idx = np.random.default_rng(a.seed).choice(len(ws), a.n, replace=False)
    eng = Engine(a.model, threads=2)
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\nWhat defect pattern does this wafer map show?"}]
    answers = {}
    for name in variants(ws.maps[0]):
        images = [render_map(variants(ws.maps[i])[name]) for i in idx]
        answers[name] = [parse_diagnosis(t) for t in eng.generate([(msgs, [im]) for im in images],
                                                                  Sampling(max_new_tokens=24))]
    base = answers["as published (52x52)"]
    gold = [tuple(ws.defects[i]) for i in idx]
    print(f"| frame (n = {a.n} MixedWM38 val maps, seed {a.seed}) | same diagnosis as published | exact match |")
    print("|---|---|---|")
    for name, ans in answers.items():
        same = sum(x == y for x, y in zip(ans, base))
        exact = sum(x == g for x, g in zip(ans, gold))
        print(f"| {name} | {same}/{a.n} | {exact / a.n:.3f} |")


if __name__ == "__main__":
    main()
