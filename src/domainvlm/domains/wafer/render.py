"""Wafer map <-> RGB image with a fixed three-colour palette.

Every die becomes a block of identical pixels (integer nearest-neighbour scale, never interpolation), so the
model sees crisp dies and a saved PNG can be read back into the exact map with :func:`image_to_map`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...errors import UserError

# viridis at 0 / 0.5 / 1: the look of most published WM-811K figures; dark, mid and bright are easy to tell
# apart, also in greyscale and for colour-blind readers.
PALETTE: dict[int, tuple[int, int, int]] = {0: (68, 1, 84), 1: (33, 145, 140), 2: (253, 231, 37)}
_LUT = np.array([PALETTE[i] for i in range(3)], dtype=np.uint8)
DEFAULT_SIDE = 224  # longest side targeted when no size is given (a common vision-encoder input)


def _check(m) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim != 2 or m.size == 0:
        raise UserError(f"wafer map must be a non-empty 2-D array, got shape {m.shape}")
    if not np.isin(m, (0, 1, 2)).all():
        raise UserError("wafer map values must be 0 (off-wafer), 1 (pass) or 2 (fail)")
    return m.astype(np.intp)


def _layout(h: int, w: int, size: int | None):
    """(die pixels k, square side s, top, left) shared by render and inverse so they always agree.

    size None: no padding, k = DEFAULT_SIDE // longest side. Otherwise the map is centred in an s x s square
    (s = longest side), scaled by k = size // s and centred in the output; k = 0 means downsampling.
    """
    s = max(h, w)
    if size is None:
        return max(1, DEFAULT_SIDE // s), None, 0, 0
    k = size // s
    pad = (size - s * k) // 2 if k else 0
    return k, s, pad + ((s - h) // 2) * k, pad + ((s - w) // 2) * k


def render_map(m: np.ndarray, size: int | None = None) -> Image.Image:
    """RGB image of a wafer map. ``size`` gives an exactly size x size image (padded with off-wafer colour)."""
    m = _check(m)
    h, w = m.shape
    if size is not None and size < 1:
        raise UserError(f"render size must be positive, got {size}")
    k, s, top, left = _layout(h, w, size)
    if size is None:
        return Image.fromarray(_LUT[np.kron(m, np.ones((k, k), np.intp))], "RGB")
    if k == 0:  # map larger than the image: nearest sampling keeps palette colours but drops dies
        sq = np.zeros((s, s), np.intp)
        sq[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = m
        idx = (np.arange(size) * s) // size
        return Image.fromarray(_LUT[sq[np.ix_(idx, idx)]], "RGB")
    out = np.zeros((size, size), np.intp)
    out[top:top + h * k, left:left + w * k] = np.kron(m, np.ones((k, k), np.intp))
    return Image.fromarray(_LUT[out], "RGB")


def _labels(img: Image.Image) -> np.ndarray:
    """Palette index of every pixel (nearest colour, so mild re-encoding noise is tolerated)."""
    a = np.asarray(img.convert("RGB"), dtype=np.int32)
    d = ((a[:, :, None, :] - _LUT[None, None].astype(np.int32)) ** 2).sum(-1)
    return d.argmin(-1).astype(np.uint8)


def image_to_map(img: Image.Image, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`render_map`.

    With ``grid=(h, w)`` (the map shape) the result is exact for any render_map output. Without it the die
    size is inferred from where colours change; that is exact for renders without ``size`` (no padding), while a
    padded render comes back as an equivalent larger map that includes the padding as off-wafer dies.
    """
    lab = _labels(img)
    H, W = lab.shape
    if grid is None:
        cols = np.flatnonzero((lab[:, 1:] != lab[:, :-1]).any(0)) + 1  # where some row changes colour
        rows = np.flatnonzero((lab[1:] != lab[:-1]).any(1)) + 1
        k = int(np.gcd.reduce(np.concatenate([[H, W], cols, rows])))
        return lab[k // 2::k, k // 2::k][: H // k, : W // k].copy()
    h, w = int(grid[0]), int(grid[1])
    if h < 1 or w < 1:
        raise UserError(f"grid must be positive (h, w), got {grid}")
    if H % h == 0 and W % w == 0 and H // h == W // w:
        k, top, left = H // h, 0, 0  # unpadded render (for a square map the padded layout is the same)
    elif H == W:
        k, _, top, left = _layout(h, w, H)
        if k == 0:
            raise UserError(f"image {W}x{H} is smaller than the {h}x{w} map grid; dies were dropped when rendering")
    else:
        raise UserError(f"image {W}x{H} does not match a rendered {h}x{w} wafer map")
    ys = top + np.arange(h) * k + k // 2
    xs = left + np.arange(w) * k + k // 2
    return lab[np.ix_(ys, xs)].copy()
