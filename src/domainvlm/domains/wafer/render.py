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


def flatten(img: Image.Image) -> Image.Image:
    """RGB of a picture as its dies are read: a transparent area (alpha, PNG tRNS) is composited onto the
    off-wafer colour, and a margin in a colour no wafer colour is near (what a dropped alpha leaves: white from
    matplotlib, black from numpy) becomes off-wafer when every other pixel is in the palette. Else the picture
    as it was (an RGB image itself: no copy, host time per map)."""
    if img.mode == "RGB" and MAP_LAYOUT in img.info:  # drawn by render_map: palette, no array (host time)
        return img
    return _flat(img)[0]


def flat_array(img: Image.Image) -> np.ndarray:
    """:func:`flatten`'s pixels, (H, W, 3) uint8."""
    return np.asarray(img) if img.mode == "RGB" and MAP_LAYOUT in img.info else _flat(img)[1]


def _flat(img: Image.Image) -> tuple[Image.Image, np.ndarray]:
    info = {k: v for k, v in img.info.items() if k != "transparency"}
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            rgba = Image.alpha_composite(Image.new("RGBA", img.size, (*PALETTE[0], 255)), rgba)
        img = rgba.convert("RGB")
        img.info.update(info)
    elif img.mode != "RGB":
        img = img.convert("RGB")
        img.info.update(info)
    a = np.asarray(img)
    b = _margin_off(a)
    if b is a:
        return img, a
    out = Image.fromarray(b, "RGB")
    out.info.update(info)
    return out, b


def _margin_off(a: np.ndarray, tol: int = 24) -> np.ndarray:
    """``a`` with its margin colour (the border's commonest, no wafer colour) as off-wafer, when the rest is
    palette and holds pass or fail dies; else ``a`` itself. A photo fails on a sparse sample first."""
    if a.ndim != 3 or min(a.shape[:2]) < 3:
        return a
    border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    code = (border[:, 0].astype(np.uint32) << 16) | (border[:, 1].astype(np.uint32) << 8) | border[:, 2]
    if np.isin(code, _CODES).all() or _within(border, tol):  # every render of ours: exact colours, at once
        return a
    vals, n = np.unique(code, return_counts=True)
    c = np.array([(vals[n.argmax()] >> s) & 255 for s in (16, 8, 0)], np.int16)
    if n.max() < 0.5 * len(border) or _within(c[None], tol):
        return a
    bg = np.abs(a.astype(np.int16) - c).max(-1) <= tol
    if not _within(a[::7, ::7][~bg[::7, ::7]], tol):
        return a
    rest = a[~bg]
    if len(rest) < 0.02 * bg.size or not _within(rest, tol):
        return a
    if not any((np.abs(rest.astype(np.int16) - c).max(-1) <= tol).any() for c in _LUT[1:].astype(np.int16)):
        return a  # no pass or fail die: left to the input check (blank)
    out = a.copy()
    out[bg] = _LUT[0]
    return out


def palette_index(img: Image.Image, tol: int | None = None) -> np.ndarray | None:
    """Palette index of every pixel: the nearest wafer colour, so mild re-encoding noise is tolerated.

    With ``tol``: None unless every pixel is within ``tol`` (per channel) of some wafer colour. Exact palette
    pixels (every render of ours) are matched by colour code, the rest compared colour by colour; an image
    that is no wafer map is turned down on a sparse sample first. Host time per map (this bounds eval on a GPU)
    and memory stay a few bytes per pixel."""
    a = flat_array(img)
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
    for a 1,264-die wafer). A map scaled by a fraction (nearest-neighbour: die blocks of 5 and 6 pixels) is read
    on the fractional die pitch its colour changes fit (:func:`_fractional_grid`)."""
    H, W = lab.shape
    cols = np.flatnonzero((lab[:, 1:] != lab[:, :-1]).any(0)) + 1  # where some row changes colour
    rows = np.flatnonzero((lab[1:] != lab[:-1]).any(1)) + 1
    k = int(np.gcd.reduce(np.concatenate([[H, W], cols, rows])))
    if k == 1 and len(cols) > 1 and len(rows) > 1:
        ko = int(np.gcd.reduce(np.concatenate([np.diff(cols), np.diff(rows)])))  # square dies: both axes
        if ko > 1:
            oy, ox = int(rows[0] % ko), int(cols[0] % ko)
            return lab[oy + ko // 2::ko, ox + ko // 2::ko][:(H - oy) // ko, :(W - ox) // ko].copy()
        got = _fractional_grid(lab, rows, cols)
        if got is not None:
            return got
    return lab[k // 2::k, k // 2::k][: H // k, : W // k].copy()


# Below ~1.5 pixels a die a map of 1-pixel dies fits a pitch too; at 1.5 and over two 1-pixel runs in a row
# (every outline of a 1-pixel-die wafer has them) fit none.
MIN_PITCH = 1.4


def _fractional_grid(lab: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """The die grid of a map resized by a fraction, or None. Nearest-neighbour resizing puts every die edge
    within a pixel of o + n * p (p: the fractional die pitch); per axis the largest pitches that colour
    changes fit are tried, and a grid is taken only when redrawing it gives back every pixel of ``lab``."""
    eys = _edges(rows, lab.shape[0])
    exs = _edges(cols, lab.shape[1]) if eys else []
    for ey in eys:
        for ex in exs:
            wy, wx = np.diff(ey), np.diff(ex)
            m = lab[np.ix_(ey[:-1] + wy // 2, ex[:-1] + wx // 2)]
            if np.array_equal(m.repeat(wy, 0).repeat(wx, 1), lab):
                return m
    return None


def _edges(b: np.ndarray, size: int, tries: int = 2) -> list[np.ndarray]:
    """Die edges (0 and ``size`` included) along one axis for the largest pitches p >= MIN_PITCH that put every
    colour change ``b`` (sorted pixel positions) within one pixel-wide window of o + n * p: the phases b / p
    mod 1 then fill an arc of at most 1 / p. The smallest run is one die, so p is within a pixel of it."""
    g = np.diff(b)
    if len(b) < 3 or ((g[1:] == 1) & (g[:-1] == 1)).any():  # two 1-pixel runs in a row: 1-pixel dies
        return []
    lo, hi = max(MIN_PITCH, float(g.min()) - 1), float(g.min()) + 1
    ps = np.arange(hi, lo, -0.05 * lo / size)  # steps drift a phase by <= 0.05 px over the axis
    bf = b.astype(np.float64)
    ok = np.zeros(len(ps), bool)
    for c in range(0, len(ps), 256):
        p = ps[c:c + 256, None]
        ph = np.sort((bf / p) % 1.0, axis=1)
        gap = np.diff(np.concatenate([ph, ph[:, :1] + 1.0], 1), axis=1).max(1)
        ok[c:c + 256] = (1.0 - gap) * p[:, 0] <= 1.1
    out = []
    edge = np.flatnonzero(np.diff(np.concatenate([[0], ok.view(np.int8), [0]])))
    for a, z in zip(edge[::2], edge[1::2]):  # runs of fitting pitches, largest first: the middle of each
        p = float(ps[a:z].mean())
        ph = (bf / p) % 1.0
        srt = np.sort(ph)
        k = int(np.diff(np.concatenate([srt, srt[:1] + 1.0])).argmax())
        o = srt[(k + 1) % len(srt)] * p  # the arc of phases starts after its largest gap
        j = np.floor((bf - o) / p + 1e-6)
        p = float(((j - j.mean()) * (bf - bf.mean())).sum() / max(((j - j.mean()) ** 2).sum(), 1e-9))
        o = float((bf - j * p).mean())
        if p < MIN_PITCH or len(np.unique(j)) < len(j):
            continue
        n0 = int(np.floor(-o / p))
        at = np.round(o + np.arange(n0, int(np.ceil((size - o) / p)) + 1) * p).astype(np.int64)
        at[j.astype(np.int64) - n0] = b  # an edge where a colour changes is exact
        out.append(np.unique(np.concatenate([[0, size], at[(at > 0) & (at < size)]])))
        if len(out) == tries:
            break
    return out


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
