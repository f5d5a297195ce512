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
# PIL info key of a drawn map: (top, left, k, h, w, frame): pixel of its die (0, 0), pixels a die, its shape,
# and "map" (drawn from map data) or "picture" (a picture's die grid, redrawn); dies.read_dies reports die
# coordinates in that frame, not in the wafer's bounding box
MAP_LAYOUT = "domainvlm.map_layout"


def _check(m) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim != 2 or m.size == 0:
        raise UserError(f"wafer map must be a non-empty 2-D array, got shape {m.shape}")
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.bool_)) or m.min() < 0 or m.max() > 2:
        if not np.isin(m, (0, 1, 2)).all():  # e.g. floats 0.0/1.0/2.0 pass
            raise UserError("wafer map values must be 0 (off-wafer), 1 (pass) or 2 (fail)")
    return m.astype(np.uint8)


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
        return _laid_out(Image.fromarray(_LUT[m.repeat(k, 0).repeat(k, 1)], "RGB"), (0, 0, k, h, w, "map"))
    if k == 0:  # map larger than the image: nearest sampling keeps palette colours but drops dies
        sq = np.zeros((s, s), np.uint8)
        sq[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = m
        idx = (np.arange(size) * s) // size
        return Image.fromarray(_LUT[sq[np.ix_(idx, idx)]], "RGB")
    out = np.zeros((size, size), np.uint8)  # uint8 indices and repeat: 5x faster than kron on intp
    out[top:top + h * k, left:left + w * k] = m.repeat(k, 0).repeat(k, 1)
    return _laid_out(Image.fromarray(_LUT[out], "RGB"), (top, left, k, h, w, "map"))


def _laid_out(img: Image.Image, layout: tuple) -> Image.Image:
    img.info[MAP_LAYOUT] = layout
    return img


_CODES = (_LUT[:, 0].astype(np.uint32) << 16) | (_LUT[:, 1].astype(np.uint32) << 8) | _LUT[:, 2]


def palette_index(img: Image.Image, tol: int | None = None) -> np.ndarray | None:
    """Palette index of every pixel: the nearest wafer colour, so mild re-encoding noise is tolerated.

    With ``tol``: None unless every pixel is within ``tol`` (per channel) of some wafer colour. Exact palette
    pixels (every render of ours) are matched by colour code, the rest compared colour by colour; an image
    that is no wafer map is turned down on a sparse sample first. Host time per map (this bounds eval on a GPU)
    and memory stay a few bytes per pixel."""
    a = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    if tol is not None and not _within(a[::7, ::7].reshape(-1, 3), tol):
        return None
    code = (a[..., 0].astype(np.uint32) << 16) | (a[..., 1].astype(np.uint32) << 8) | a[..., 2]
    lab = np.full(code.shape, 255, np.uint8)
    for i, c in enumerate(_CODES):
        lab[code == c] = i
    rest = lab == 255
    if rest.any():
        px = a[rest]
        if tol is not None and not _within(px, tol):
            return None
        lab[rest] = _nearest(px)
    return lab


def _nearest(px: np.ndarray) -> np.ndarray:
    best = np.full(len(px), np.iinfo(np.int32).max, np.int32)
    idx = np.zeros(len(px), np.uint8)
    for i, c in enumerate(_LUT.astype(np.int32)):
        d = ((px.astype(np.int32) - c) ** 2).sum(-1)
        closer = d < best
        best[closer], idx[closer] = d[closer], i
    return idx


def _within(px: np.ndarray, tol: int) -> bool:
    """Every (n, 3) pixel within ``tol`` per channel of some palette colour."""
    ok = np.zeros(len(px), bool)
    for c in _LUT.astype(np.int16):
        ok |= np.abs(px.astype(np.int16) - c).max(-1) <= tol
    return bool(ok.all())


def labels_to_map(lab: np.ndarray) -> np.ndarray:
    """Die grid of palette indices: the die size is where colours change. A render without padding has its die
    grid at pixel 0; a map pasted onto a margin that is no multiple of the die size (a PNG placed at (20, 17) on a
    canvas) is read from where its colour changes fall, else its dies came back as 1-pixel dies (28,272 'dies'
    for a 1,264-die wafer). A map scaled by a fraction (die blocks of 7 and 8 pixels) has no exact die grid and
    still comes back as 1-pixel dies."""
    H, W = lab.shape
    cols = np.flatnonzero((lab[:, 1:] != lab[:, :-1]).any(0)) + 1  # where some row changes colour
    rows = np.flatnonzero((lab[1:] != lab[:-1]).any(1)) + 1
    k = int(np.gcd.reduce(np.concatenate([[H, W], cols, rows])))
    if k == 1 and len(cols) > 1 and len(rows) > 1:
        ko = int(np.gcd.reduce(np.concatenate([np.diff(cols), np.diff(rows)])))  # square dies: both axes
        if ko > 1:
            oy, ox = int(rows[0] % ko), int(cols[0] % ko)
            return lab[oy + ko // 2::ko, ox + ko // 2::ko][:(H - oy) // ko, :(W - ox) // ko].copy()
    return lab[k // 2::k, k // 2::k][: H // k, : W // k].copy()


def image_to_map(img: Image.Image, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`render_map`.

    With ``grid=(h, w)`` (the map shape) the result is exact for any render_map output. Without it the die
    size is inferred from where colours change; that is exact for renders without ``size`` (no padding), while a
    padded render comes back as an equivalent larger map that includes the padding as off-wafer dies.
    """
    lab = palette_index(img)
    H, W = lab.shape
    if grid is None:
        return labels_to_map(lab)
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
