"""Labelled wafer maps of any taxonomy in one npz: the new-class maps the taxonomy-extension recipe trains on.

Layout (WM-811K's flat one, with label sets instead of one failure type)::

    maps_flat (M,) uint8   0 off-wafer / 1 pass / 2 fail; map i = maps_flat[offsets[i]:offsets[i+1]]
    shapes    (N, 2) int   rows, cols of each map (sizes may differ)
    offsets   (N+1,) int
    labels    (N,) str     the map's classes joined by '+' ("Center+Reticle-Repeat"); "Normal" or "" for none
    split     (N,) str     optional: train / val / ...

Class names are checked against the taxonomy the maps are read for (one clear line naming the map otherwise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from .sources import WaferSet, _check_maps, _get, _read_split, _write_npz

KEYS = ("maps_flat", "shapes", "offsets", "labels")


def label_text(defects, tax=None) -> str:
    """'A+B' in taxonomy order (as given when ``tax`` is None), or the none label."""
    return "+".join(tax.canonical(defects) if tax is not None else defects) or (
        tax.none_label if tax is not None and tax.none_label else "Normal")


def save_labelled_npz(ws: WaferSet, path, tax=None) -> None:
    _check_maps(ws, path)
    shapes = np.array([np.shape(m) for m in ws.maps], dtype=np.int32).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1])])
    arrays = {"maps_flat": np.concatenate([np.asarray(m, np.uint8).ravel() for m in ws.maps]
                                          or [np.zeros(0, np.uint8)]),
              "shapes": shapes, "offsets": offsets,
              "labels": np.array([label_text(d, tax) for d in ws.defects], dtype=str)}
    if ws.split is not None:
        arrays["split"] = np.array(ws.split, dtype=str)
    _write_npz(path, arrays)


def _check_layout(path, flat, shapes, offsets, n: int) -> None:
    if shapes.shape != (n, 2) or shapes.dtype.kind not in "iu":
        raise UserError(f"{path}: key 'shapes' has shape {shapes.shape} ({shapes.dtype}), expected ({n}, 2) ints")
    if offsets.shape != (n + 1,) or offsets.dtype.kind not in "iu":
        raise UserError(f"{path}: key 'offsets' has shape {offsets.shape}, expected ({n + 1},) ints")
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1]
    bad = np.flatnonzero((shapes.min(axis=1) <= 0) | (np.diff(offsets.astype(np.int64)) != sizes))
    if len(bad) or offsets[0] != 0 or offsets[-1] != len(flat):
        i = int(bad[0]) if len(bad) else 0
        raise UserError(f"{path}: keys 'offsets'/'shapes'/'maps_flat' inconsistent at map {i}")
    ok = (flat == 0) | (flat == 1) | (flat == 2)
    if not ok.all():
        i = int(np.searchsorted(offsets, int(np.argmin(ok)), side="right") - 1)
        raise UserError(f"{path}: key 'maps_flat': map {i} has a value other than 0 off, 1 pass, 2 fail")


def load_labelled_npz(path, tax, split: str | None = None) -> WaferSet:
    """The maps of ``path`` (optionally one split) with their label sets canonical in ``tax``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable npz file ({e.__class__.__name__})") from None
    with z:
        missing = [k for k in KEYS if k not in z.files]
        if missing:
            raise UserError(f"{path}: key '{missing[0]}' missing (a labelled map npz has {', '.join(KEYS)})")
        flat, shapes, offsets, labels = (_get(z, k, path) for k in KEYS)
        if labels.ndim != 1:
            raise UserError(f"{path}: key 'labels' has shape {labels.shape}, expected (N,)")
        n = len(labels)
        _check_layout(path, flat, shapes, offsets, n)
        flat = flat.astype(np.uint8, copy=False)
        splits = _read_split(z, path, n)
        texts = [str(x) for x in labels.tolist()]
    defects = []
    for i, t in enumerate(texts):
        try:
            defects.append(tax.canonical([s.strip() for s in t.split("+")]))
        except ValueError as e:
            raise UserError(f"{path}: key 'labels': map {i}: {e}") from None
    maps = [flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(n)]
    ws = WaferSet(maps, defects, splits, "custom", "custom", str(path))
    return ws.select(split) if split else ws
