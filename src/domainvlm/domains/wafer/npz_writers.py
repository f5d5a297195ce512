"""Writing wafer-map npz files in the layouts sources.py reads: MixedWM38's, WM-811K's flat one, and the flat
arrays that labelled.py writes with label sets. Each file is written to a temporary name and renamed into
place, so a failed write leaves nothing half-written."""

from __future__ import annotations

import numpy as np

from ...errors import UserError
from ...io import atomic_path
from .patterns import PATTERNS, canonical_set, set_name


def check_maps(ws, path) -> None:
    """Every map of WaferSet ``ws`` a 2-D 0/1/2 grid, and one defect set (and split) per map."""
    for i, m in enumerate(ws.maps):
        m = np.asarray(m)
        if m.ndim != 2 or m.size == 0:
            raise UserError(f"{path}: map {i} has shape {m.shape}, expected a 2-D map")
        if not np.isin(m, (0, 1, 2)).all():
            raise UserError(f"{path}: map {i} has values other than 0/1/2")
    if len(ws.defects) != len(ws.maps) or (ws.split is not None and len(ws.split) != len(ws.maps)):
        raise UserError(f"{path}: {len(ws.maps)} maps but {len(ws.defects)} defect sets / "
                        f"{len(ws.split) if ws.split is not None else '-'} split entries")


def flat_arrays(ws) -> dict:
    """The flat layout's map arrays (maps of any size): maps_flat, shapes, offsets, plus split if ``ws`` has one."""
    shapes = np.array([np.shape(m) for m in ws.maps], dtype=np.int32).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1])])
    arrays = {"maps_flat": np.concatenate([np.asarray(m, np.uint8).ravel() for m in ws.maps]
                                          or [np.zeros(0, np.uint8)]),
              "shapes": shapes, "offsets": offsets}
    if ws.split is not None:
        arrays["split"] = np.array(ws.split, dtype=str)
    return arrays


def save_wm811k_npz(ws, path) -> None:
    """Write the flat WM-811K layout (one failure type per map), e.g. to convert LSWMD.pkl once."""
    check_maps(ws, path)
    types = []
    for i, d in enumerate(ws.defects):
        d = canonical_set(d)
        if len(d) > 1:
            raise UserError(f"{path}: map {i} has defect set {set_name(d)}; WM-811K allows one type per map")
        types.append(d[0] if d else "None")
    write_npz(path, flat_arrays(ws) | {"failure_type": np.array(types, dtype="<U10")})


def save_mixedwm38_npz(ws, path, with_split: bool = True) -> None:
    """Write the MixedWM38 layout: arr_0 (N,H,W) uint8, arr_1 (N,8) multi-hot, label_names, optional split."""
    check_maps(ws, path)
    shapes = {np.shape(m) for m in ws.maps}
    if len(shapes) > 1:
        raise UserError(f"{path}: MixedWM38 layout needs one map shape, got {len(shapes)} "
                        f"(e.g. {', '.join(map(str, sorted(shapes)[:3]))})")
    col = {p: j for j, p in enumerate(PATTERNS)}
    hot = np.zeros((len(ws), len(PATTERNS)), np.uint8)
    for i, d in enumerate(ws.defects):
        hot[i, [col[p] for p in canonical_set(d)]] = 1
    h, w = shapes.pop() if shapes else (0, 0)
    arrays = {"arr_0": np.asarray(ws.maps, np.uint8).reshape(len(ws), h, w), "arr_1": hot,
              "label_names": np.array(PATTERNS)}
    if with_split and ws.split is not None:
        arrays["split"] = np.array(ws.split, dtype=str)
    write_npz(path, arrays)


def write_npz(path, arrays: dict) -> None:
    # Write through a file handle: np.savez would append ".npz" to a temporary name.
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
