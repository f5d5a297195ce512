"""Synthetic fab-pattern sets (the makers: fab_patterns.py) and their CLI, for the taxonomy-extension demo:

    python -m domainvlm.domains.wafer.synth_fab OUT_DIR --n 50 [--train-negatives N] [--val 30] [--test 100]
"""

from __future__ import annotations

import numpy as np

from .fab_patterns import FAB_PATTERNS, MAKERS, MIX_WITH

__all__ = ["FAB_PATTERNS", "MAKERS", "MIX_WITH", "synth_fab_set", "main"]


def synth_fab_set(n_per_class: int, seed: int = 0, classes=FAB_PATTERNS, mixed_frac: float = 0.5,
                  negatives: int = 0, wm811k_frac: float = 0.5):
    """``n_per_class`` maps of each fab class (``mixed_frac`` of them mixed with one of MIX_WITH) plus
    ``negatives`` maps of the 38 known MixedWM38 classes; ``wm811k_frac`` of all maps at a WM-811K-like size
    (25..64 dies a side), the rest at MixedWM38's 52. Shuffled; a WaferSet of taxonomy "custom"."""
    from .patterns import canonical_set, mixedwm38_classes
    from .sources import WaferSet
    from .synth import synth_map

    rng = np.random.default_rng(seed)
    known = mixedwm38_classes()
    sets = []
    for c in classes:
        for _ in range(n_per_class):
            extra = (str(rng.choice(MIX_WITH)),) if rng.random() < mixed_frac else ()
            sets.append(extra + (c,))
    sets += [canonical_set(known[int(rng.integers(len(known)))].split("+")) for _ in range(negatives)]
    sets = [sets[i] for i in rng.permutation(len(sets))]
    sizes = [int(rng.integers(25, 65)) if rng.random() < wm811k_frac else 52 for _ in sets]
    maps = [synth_map(d, s, rng) for d, s in zip(sets, sizes)]
    return WaferSet(maps, sets, None, "custom", "custom", f"<synthetic fab seed={seed}>")


def main(argv=None) -> int:
    """python -m domainvlm.domains.wafer.synth_fab OUT_DIR --n 50: train.npz (n per fab class), val.npz and
    test.npz (held back: other seeds, plus as many maps of the known classes as of each fab class)."""
    import argparse
    from pathlib import Path

    from .labelled import save_labelled_npz

    p = argparse.ArgumentParser(prog="python -m domainvlm.domains.wafer.synth_fab", description=main.__doc__)
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=50, help="training maps per fab class")
    p.add_argument("--val", type=int, default=30, help="val maps per fab class (model selection)")
    p.add_argument("--test", type=int, default=100, help="held-back test maps per fab class")
    p.add_argument("--train-negatives", type=int, default=0,
                   help="also this many synthetic maps of the known classes in train.npz (the known patterns in "
                        "the synthetic style, so that style alone does not mean a new class)")
    p.add_argument("--train-normal-from", metavar="NPZ",
                   help="also real Normal maps from this MixedWM38 / WM-811K npz's train split in train.npz (hard "
                        "negatives: real Normal maps carry more scattered fails than the synthetic ones)")
    p.add_argument("--train-normal", type=int, default=0, help="how many (the first ones of the train split)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out_dir)
    for name, n, neg, seed in (("train", a.n, a.train_negatives, a.seed), ("val", a.val, a.val, a.seed + 1),
                               ("test", a.test, a.test, a.seed + 2)):
        ws = synth_fab_set(n, seed, negatives=neg)
        if name == "train" and a.train_normal_from and a.train_normal:
            ws = _with_real_normal(ws, a.train_normal_from, a.train_normal)
        save_labelled_npz(ws, out / f"{name}.npz")
        print(f"{out / (name + '.npz')}: {len(ws)} maps", flush=True)
    return 0


def _with_real_normal(ws, path: str, n: int):
    """``ws`` plus the first ``n`` Normal maps of ``path``'s train split (appended: sampling is uniform)."""
    from .sources import WaferSet, load_wafer_file

    real = load_wafer_file(path).select("train")
    normal = [m for m, d in zip(real.maps, real.defects) if not d][:n]
    return WaferSet(list(ws.maps) + normal, list(ws.defects) + [()] * len(normal), None, ws.source, ws.taxonomy,
                    ws.path)


if __name__ == "__main__":
    raise SystemExit(main())
