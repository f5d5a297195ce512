"""Evidence quality of the wafer expert on held-back synthetic maps: pointing accuracy and IoU per pattern.

Each map is drawn by the synthetic generator together with the dies every pattern placed (the ground truth,
``synth_map_with_masks``); the evidence of each of its true patterns is computed from the model
(domains/wafer/evidence.py: integrated gradients of that pattern's line over the Normal line, per failing die).
*Pointing*: the top-scoring die lies in the pattern's mask. *IoU*: the evidence mask against the pattern's mask.
The patterns attributed are the map's true ones (the pointing-game convention: does the model look at the
right dies for a pattern), whatever the model answers; ``named`` / ``pt@named`` restrict it to the patterns the
model also names (the only ones the answer head gives evidence for). Also prints the evidence time per map.

    python bench/wafer_evidence.py [--n 74] [--seed 3] [--level 6|pixels] [--steps 1] [--at 0.5] [--model DIR]
                                   [--dump F | --from-dump F]

Seeds 1 and 2 were used to choose the mask and top-die rule (evidence.select), the level, steps and path point
(evidence.LEVEL / STEPS / SINGLE); report another seed (3 and up).
The expert's training maps are MixedWM38 / WM-811K maps and their pixel-level mixtures, not these synthetic ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _table(rows: list[dict]) -> None:
    """Pointing / IoU per pattern from dumped rows {map, gt, named, raw, pt} (raw: per-die attribution; pt:
    what the top die is picked by, where it is not raw)."""
    from domainvlm.domains.wafer.evidence import clusters, select

    stats: dict[str, dict] = {}
    for r in rows:
        lab = clusters(r["map"] == 2)
        for pat, raw in r["raw"].items():
            mask, top, _ = select(raw, r["map"], lab, r.get("pt", {}).get(pat))
            gt = r["gt"][pat]
            hit = top is not None and bool(gt[top])
            s = stats.setdefault(pat, {"n": 0, "hit": 0, "named": 0, "named_hit": 0, "iou": []})
            s["n"] += 1
            s["hit"] += hit
            s["named"] += pat in r["named"]
            s["named_hit"] += pat in r["named"] and hit
            s["iou"].append((mask & gt).sum() / max((mask | gt).sum(), 1))
    head = f"{'pattern':<11}{'n':>5}{'pointing':>10}{'IoU':>8}{'named':>7}{'pt@named':>10}"
    print(head)
    print("-" * len(head))
    tot = {k: sum(s[k] for s in stats.values()) for k in ("n", "hit", "named", "named_hit")}
    tot["iou"] = [x for s in stats.values() for x in s["iou"]]
    for pat, s in sorted(stats.items()) + [("all", tot)]:
        pn = f"{s['named_hit'] / s['named']:.3f}" if s["named"] else "-"
        print(f"{pat:<11}{s['n']:>5}{s['hit'] / s['n']:>10.3f}{np.mean(s['iou']):>8.3f}{s['named']:>7}{pn:>10}")


def _save_rows(rows: list[dict], path: str) -> None:
    """Rows as one npz (no pickle): keys "<i>.map", "<i>.named", "<i>.gt.<pattern>", "<i>.raw.<pattern>"."""
    arrays = {}
    for i, r in enumerate(rows):
        arrays[f"{i}.map"] = r["map"]
        arrays[f"{i}.named"] = np.array(sorted(r["named"]), dtype=str)
        arrays.update({f"{i}.gt.{k}": np.asarray(v) for k, v in r["gt"].items()})
        arrays.update({f"{i}.raw.{k}": np.asarray(v) for k, v in r["raw"].items()})
        arrays.update({f"{i}.pt.{k}": np.asarray(v) for k, v in r.get("pt", {}).items() if v is not None})
    tmp = f"{path}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    Path(tmp).replace(path)


def _load_rows(path: str) -> list[dict]:
    z = np.load(path, allow_pickle=False)
    rows: dict[int, dict] = {}
    for key in z.files:
        i, kind, *pat = key.split(".", 2)
        r = rows.setdefault(int(i), {"gt": {}, "raw": {}, "pt": {}})
        if kind in ("gt", "raw", "pt"):
            r[kind][pat[0]] = z[key]
        else:
            r[kind] = set(z[key].tolist()) if kind == "named" else z[key]
    return [rows[i] for i in sorted(rows)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the bundled wafer expert)")
    p.add_argument("--n", type=int, default=74, help="maps (balanced over the 37 classes with a pattern)")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--size", type=int, default=52)
    p.add_argument("--lang", default="en", choices=["en", "zh"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="integrated-gradient steps (default: evidence.STEPS)")
    p.add_argument("--level", default=None, help="vision block after which tokens are attributed, or 'pixels' "
                   "(default: evidence.LEVEL)")
    p.add_argument("--at", type=float, default=None, help="path point of a single step, 0 = baseline, 1 = the "
                   "map (default: evidence.SINGLE)")
    p.add_argument("--dump", help="also save the raw per-die scores (an npz, read back by --from-dump)")
    p.add_argument("--from-dump", help="print the table of a --dump file again (no model run)")
    a = p.parse_args()
    if a.from_dump:
        rows = _load_rows(a.from_dump)
        _table(rows)
        print(f"{len(rows)} maps from {a.from_dump}")
        return
    _run(a)


def _run(a) -> None:
    import torch

    from domainvlm.domains.wafer.evidence import LEVEL, SINGLE, STEPS, Attributor
    from domainvlm.domains.wafer.knowledge import parse_diagnosis
    from domainvlm.domains.wafer.patterns import mixedwm38_classes
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map_with_masks
    from domainvlm.inference.engine import Engine

    torch.set_num_threads(a.threads)
    eng = Engine(a.model, device="cpu", threads=a.threads)
    level = LEVEL if a.level is None else None if a.level == "pixels" else int(a.level)
    att = Attributor(eng.answer_head, a.steps or STEPS, level, single=SINGLE if a.at is None else a.at)
    msgs = [{"role": "user", "content": "<image>\nWhat defect pattern does this wafer map show?"}]
    classes = [c for c in mixedwm38_classes() if c != "Normal"]
    rng = np.random.default_rng(a.seed)
    rows, times = [], []
    for i in range(a.n):
        defects = tuple(classes[i % len(classes)].split("+"))
        m, gt = synth_map_with_masks(defects, a.size, rng)
        img = render_map(m, size=att.head.size)
        named = set(parse_diagnosis(eng.generate([(msgs, [img])])[0]) or ())
        t0 = time.perf_counter()
        dies, raw = att.raw_scores(img, defects, a.lang)
        times.append(time.perf_counter() - t0)
        if dies.grid.shape != m.shape or (dies.grid != m).any():
            raise SystemExit(f"map {i}: die grid read back from the canvas differs from the map")
        pt = {p: att.point(r, dies) for p, r in raw.items()}  # what the top die is picked by
        rows.append({"map": m, "gt": gt, "named": named, "raw": raw, "pt": pt})
        if a.dump:
            _save_rows(rows, a.dump)
    _table(rows)
    where = "pixels" if att.level is None else f"tokens after vision block {att.level}"
    print(f"{where}, steps {att.steps} at {att.alphas}; attribution time per map (CPU, {a.threads} threads): p50 "
          f"{np.median(times) * 1e3:.0f} ms, p90 {np.percentile(times, 90) * 1e3:.0f} ms over {a.n} maps "
          f"(seed {a.seed}; use domainvlm bench --evidence for latency)")


if __name__ == "__main__":
    main()
