"""A val split carved from train, for wafer data that ships without one (the Kaggle ``LSWMD.pkl``: Training / Test
only): the recipe and ``calibrate`` select and fit on val, never on test.

Seeded and stratified per class, so every class of train keeps the same share in val (WM-811K's 30-map
Near-full class gets val maps too) and a rerun carves the same maps.
"""

from __future__ import annotations

import numpy as np

from ...errors import UserError


def carve_val(ws, fraction: float, seed: int = 0, where: str = ""):
    """``ws`` with ``fraction`` of each class's train maps moved to split "val" (a file without a split column,
    e.g. MixedWM38 as downloaded: all its maps are train); ``ws`` unchanged when it has a val split already."""
    from .sources import WaferSet

    if not 0 < fraction < 1:
        raise UserError(f"--val-fraction: must be in (0, 1), got {fraction}")
    split = list(ws.split) if ws.split is not None else ["train"] * len(ws)
    if "val" in split:
        return ws
    if "train" not in split:
        raise UserError(f"{where or ws.path}: --val-fraction carves val from the train split; this file has no "
                        f"train maps (splits: {', '.join(sorted(set(split)))})")
    rng = np.random.default_rng(seed)
    by_class: dict[tuple, list[int]] = {}
    for i, (s, d) in enumerate(zip(split, ws.defects)):
        if s == "train":
            by_class.setdefault(tuple(sorted(d)), []).append(i)
    for _, rows in sorted(by_class.items()):
        n = int(round(fraction * len(rows)))
        for i in rng.permutation(rows)[:n]:
            split[int(i)] = "val"
    return WaferSet(ws.maps, ws.defects, split, ws.source, ws.taxonomy, ws.path, ws.skipped_unlabelled)
