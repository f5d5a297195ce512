"""Wafer maps on the fixed square canvas the wafer expert sees, and the 8 symmetries of a wafer.

A map is drawn with :func:`domainvlm.domains.wafer.render.render_map` at ``size`` (every die an integer block of
pixels, centred, padded with the off-wafer colour), so no die is lost for maps up to ``size`` dies a side
(WM-811K's largest is 212). :func:`canvas_batch` draws many maps at once with exactly the same pixels, on the
host or on a torch device.

Defect patterns are properties of the map up to rotation and mirroring, so the 8 dihedral transforms keep
every label; :func:`dihedral` applies one of them to a map, a canvas batch or a PIL image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .render import _LUT, MAP_LAYOUT, _layout, flatten, labels_to_map, palette_index, render_map

CANVAS = 224  # the wafer expert's input side (16-pixel patches, 2x2 merge -> 49 image tokens)


def canvas_batch(maps, size: int = CANVAS, device=None):
    """(N, size, size) uint8 palette indices (0 off-wafer, 1 pass, 2 fail) for a list of 2-D maps.

    ``device`` (a torch device): the same pixels drawn there as a uint8 tensor; the host only stacks the die
    grids (a few KB a map) and copies them over once, so drawing costs no host time per pixel (eval on a GPU)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(maps):
        groups.setdefault(tuple(np.shape(m)), []).append(i)
    if device is not None:
        return _canvas_batch_torch(maps, groups, size, device)
    out = np.zeros((len(maps), size, size), np.uint8)
    for (h, w), idx in groups.items():
        k, s, top, left = _layout(h, w, size)
        if k == 0:  # larger than the canvas: fall back to the renderer's own sampling
            for i in idx:
                out[i] = palette_index(render_map(maps[i], size=size))
            continue
        block = np.stack([np.asarray(maps[i], np.uint8) for i in idx])
        block = block.repeat(k, axis=1).repeat(k, axis=2)
        out[idx, top:top + h * k, left:left + w * k] = block
    return out


def _canvas_batch_torch(maps, groups: dict, size: int, device):
    """canvas_batch's layout, drawn with torch on ``device``: one host-to-device copy of all die grids."""
    import torch

    blocks = []
    for (h, w), idx in groups.items():
        if _layout(h, w, size)[0] == 0:  # larger than the canvas: the renderer's own sampling, on the host
            blocks.append(np.stack([palette_index(render_map(maps[i], size=size)) for i in idx]))
        else:
            blocks.append(np.stack([np.asarray(maps[i], np.uint8) for i in idx]))
    dev = torch.device(device)
    flat = torch.from_numpy(np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0, np.uint8))
    order = torch.tensor([i for idx in groups.values() for i in idx], dtype=torch.long)
    if dev.type == "cuda":  # pinned: the copies run asynchronously, the host carries on
        flat, order = flat.pin_memory(), order.pin_memory()
    flat, order = flat.to(dev, non_blocking=True), order.to(dev, non_blocking=True)
    out = torch.zeros((len(maps), size, size), dtype=torch.uint8, device=dev)
    at = first = 0
    for ((h, w), idx), b in zip(groups.items(), blocks):
        part = flat[at:at + b.size].view(b.shape)
        rows = order[first:first + len(idx)] if len(idx) < len(maps) else slice(None)
        at, first = at + b.size, first + len(idx)
        k, _, top, left = _layout(h, w, size)
        if k == 0:
            out[rows] = part
        else:
            n = part.shape[0]  # every die a k x k block; expand + reshape never waits for the device
            out[rows, top:top + h * k, left:left + w * k] = part[:, :, None, :, None].expand(n, h, k, w, k).reshape(
                n, h * k, w * k)
    return out


def canvas_rgb(index: np.ndarray) -> np.ndarray:
    """Palette indices (..., H, W) -> RGB uint8 (..., H, W, 3)."""
    return _LUT[index]


def dihedral(x, k: int):
    """Transform ``k`` in 0..7 of the dihedral group: rotate by 90*(k % 4) degrees, then mirror if k >= 4.

    ``x``: a 2-D map / (..., H, W) numpy array or torch tensor (last two axes), or a PIL image.
    """
    if not 0 <= int(k) < 8:
        raise ValueError(f"dihedral transform index must be 0..7, got {k}")
    k = int(k)
    if isinstance(x, Image.Image):
        ops = [None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270]
        y = x.transpose(ops[k % 4]) if k % 4 else x.copy()
        return y.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if k >= 4 else y
    if hasattr(x, "flip") and hasattr(x, "rot90") and not isinstance(x, np.ndarray):  # torch tensor
        y = x.rot90(k % 4, dims=(-2, -1))
        return y.flip(-1) if k >= 4 else y
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(y[..., ::-1] if k >= 4 else y)


def is_palette_image(img: Image.Image, tol: int = 24) -> bool:
    """True if every pixel is within ``tol`` (per channel) of one of the three wafer colours."""
    return palette_index(img, tol) is not None


def canonical_image(img: Image.Image, size: int = CANVAS) -> Image.Image:
    """The canvas rendering of a wafer-map image: a size x size image passes as is; another rendering of a
    map in the wafer palette (e.g. an unpadded PNG) is read back into its map and redrawn; anything else is
    returned unchanged (the processor resizes it)."""
    img = flatten(img)  # alpha / a non-palette margin as off-wafer; no copy of a palette RGB image
    if img.size == (size, size):
        return img
    lab = palette_index(img, tol=24)
    if lab is None:
        return img
    m = labels_to_map(lab)
    out = _resized_canvas(img, m, size) if lab.shape[0] == lab.shape[1] else None
    out = render_map(m, size=size) if out is None else out
    now = out.info.pop(MAP_LAYOUT, None)  # None: a map larger than the canvas (dies dropped)
    out.info.update(img.info)  # e.g. input_check's mark of a picture drawn from map data
    out.info.pop(MAP_LAYOUT, None)
    if now is not None:
        out.info[MAP_LAYOUT] = _carried(img.info.get(MAP_LAYOUT), lab.shape[0] // m.shape[0], now)
    return out


def _resized_canvas(img: Image.Image, m: np.ndarray, size: int) -> Image.Image | None:
    """A canvas resized by a fraction (a 224 canvas saved at 300 px) taken back to ``size``: read at its
    fractional pitch its die grid ``m`` keeps the canvas padding as extra off-wafer dies, and redrawn from it
    the wafer came out smaller than on the map's own canvas (16 of 135 answers changed). Nearest-neighbour back
    to ``size`` when that loses no pixel (it resizes back to ``img`` exactly) and its whole-pixel dies are
    those of ``m``; its layout in the frame of ``m``. Else None."""
    small = img.resize((size, size), Image.Resampling.NEAREST)
    if not np.array_equal(np.asarray(small.resize(img.size, Image.Resampling.NEAREST)), np.asarray(img)):
        return None
    lab = palette_index(small)
    cols = np.flatnonzero((lab[:, 1:] != lab[:, :-1]).any(0)) + 1
    rows = np.flatnonzero((lab[1:] != lab[:-1]).any(1)) + 1
    k = int(np.gcd.reduce(np.concatenate([np.diff(cols), np.diff(rows)]))) if len(cols) > 1 < len(rows) else 0
    on = np.argwhere(m > 0)
    if k < 2 or not len(on):
        return None
    oy, ox = rows[0] % k, cols[0] % k
    h, w = (size - oy) // k, (size - ox) // k
    g = lab[oy:oy + h * k:k, ox:ox + w * k:k]
    core = np.zeros_like(lab)  # every die a whole k x k block; the strips around them off-wafer (padding)
    core[oy:oy + h * k, ox:ox + w * k] = g.repeat(k, 0).repeat(k, 1)
    on_g = np.argwhere(g > 0)
    if not np.array_equal(core, lab) or not len(on_g) or not np.array_equal(_bbox(m, on), _bbox(g, on_g)):
        return None  # the same dies as read from img (not a finer grid: dies of 4 and 6 pixels at k = 2)
    (r0, c0), (s0, t0) = on.min(0), on_g.min(0)
    small.info[MAP_LAYOUT] = (int(oy + (s0 - r0) * k), int(ox + (t0 - c0) * k), k, *m.shape, "picture")
    return small


def _bbox(g: np.ndarray, on: np.ndarray) -> np.ndarray:
    (r0, c0), (r1, c1) = on.min(0), on.max(0) + 1
    return g[r0:r1, c0:c1]


def _carried(was, kp: int, now: tuple) -> tuple:
    """The layout of the redrawn canvas (``now``, of the picture's die grid, ``kp`` pixels a die) in the frame
    of the map the picture was drawn from (``was``, its own layout) when the two grids line up; else the
    picture's own die grid ("picture")."""
    top, left, k = now[:3]
    if was is None or was[2] != kp or was[0] % kp or was[1] % kp:
        return (*now[:5], "picture")
    return (top + was[0] // kp * k, left + was[1] // kp * k, k, was[3], was[4], was[5])
