"""A rendered wafer map (the canvas the model saw, or any palette PNG) -> its die grid, and die geometry.

:func:`read_dies` inverts :func:`.render.render_map` without knowing the map's shape: the die size is the
common step of the pixel columns/rows where colours change, the offset where the first change falls (a padded
canvas centres the map, so dies need not start at pixel 0); the grid is cropped to the wafer's bounding box.
For every map whose wafer touches its own border (MixedWM38, synthetic maps, most WM-811K maps) this is the
exact map. The pixel layout comes back too, so per-pixel quantities (attributions) can be summed per die.
``origin`` places the cropped grid in the frame die coordinates are reported in (evidence, overlay): the map's
own rows and columns where the picture carries its layout (render.MAP_LAYOUT: drawn from map data), else the
picture's die grid from its top-left die; a map with off-wafer margin rows keeps them counted either way.

:func:`geometry` gives every die its normalised radius (1 on the rim), clock hour (12 = top of the image, as
drawn) and zone, shared by the map facts and the evidence wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from .render import MAP_LAYOUT, palette_index

ZONES = ("centre", "middle", "edge")  # radius thirds of the wafer: r < 1/3, < 2/3, <= 1
QUADRANTS = ("top-right", "top-left", "bottom-left", "bottom-right")


@dataclass
class Dies:
    grid: np.ndarray  # (h, w) uint8: 0 off-wafer, 1 pass, 2 fail
    k: int  # pixels per die side
    top: int  # pixel row of die row 0
    left: int  # pixel column of die column 0
    shape: tuple[int, int] = ()  # (H, W) of the image the dies were read from; () = as the pixels given
    origin: tuple[int, int] = (0, 0)  # (row, col) of grid[0, 0] in the reported frame
    frame_shape: tuple[int, int] = ()  # (h, w) of that frame; () = the grid's
    frame: str = "picture"  # "map": the map data's rows / cols; "picture": the picture's die grid

    def framed(self, rc) -> list[int]:
        """A (row, col) of the grid in the reported frame."""
        return [int(rc[0]) + self.origin[0], int(rc[1]) + self.origin[1]]

    def per_die(self, pixels: np.ndarray) -> np.ndarray:
        """Sum a (H, W) per-pixel array over each die's k x k block -> (h, w). Pixels of the model's canvas
        for a picture of another size (a 260 px map, drawn at 224 by a nearest resize) are first summed into
        the picture pixel each was sampled from, so every die gets what its own pixels got."""
        h, w = self.grid.shape
        if self.shape and pixels.shape != tuple(self.shape):
            (H, W), (ph, pw) = self.shape, pixels.shape
            src = _source(ph, H)[:, None] * W + _source(pw, W)[None, :]
            pixels = np.bincount(src.ravel(), weights=pixels.ravel(), minlength=H * W).reshape(H, W)
        block = pixels[self.top:self.top + h * self.k, self.left:self.left + w * self.k]
        return block.reshape(h, self.k, w, self.k).sum(axis=(1, 3))

    def canvas_px(self, pos: np.ndarray, axis: int, size: int) -> np.ndarray:
        """Picture pixel positions along ``axis`` (0 rows, 1 columns) -> their pixels on a size x size canvas."""
        n = self.shape[axis] if self.shape else size
        return (np.asarray(pos) * size) // n


def _source(n: int, src: int) -> np.ndarray:
    """The source pixel each of ``n`` pixels samples in a nearest resize from ``src`` (PIL's pixel centres)."""
    return np.minimum(((np.arange(n) + 0.5) * src / n).astype(np.int64), src - 1)


def _step(changes: np.ndarray, n: int) -> tuple[int, int]:
    """(die size, offset) from the positions where colours change along one axis of ``n`` pixels."""
    if len(changes) < 2:
        return n, 0  # a single colour (or one edge): one die wide
    k = int(np.gcd.reduce(np.diff(changes)))
    return max(k, 1), int(changes[0] % max(k, 1))


def read_dies(img) -> Dies:
    """Die grid of a rendered wafer map (PIL image or (H, W) palette indices), cropped to the wafer."""
    lab = palette_index(img) if not isinstance(img, np.ndarray) else img
    H, W = lab.shape
    cols = np.flatnonzero((lab[:, 1:] != lab[:, :-1]).any(0)) + 1
    rows = np.flatnonzero((lab[1:] != lab[:-1]).any(1)) + 1
    (kx, ox), (ky, oy) = _step(cols, W), _step(rows, H)
    k = gcd(kx, ky) or 1  # dies are square: the finer step of the two axes
    ox, oy = ox % k, oy % k
    h, w = (H - oy) // k, (W - ox) // k
    grid = lab[oy + k // 2::k, ox + k // 2::k][:h, :w]
    on = np.argwhere(grid > 0)
    if len(on) == 0:
        return Dies(grid.copy(), k, oy, ox, (H, W), (0, 0), tuple(map(int, grid.shape)))
    (r0, c0), (r1, c1) = on.min(0), on.max(0) + 1
    out = Dies(grid[r0:r1, c0:c1].copy(), k, oy + r0 * k, ox + c0 * k, (H, W), (int(r0), int(c0)),
               tuple(map(int, grid.shape)))
    return _in_map(out, getattr(img, "info", {}).get(MAP_LAYOUT))


def _in_map(d: Dies, layout) -> Dies:
    """``d`` placed in the frame of a drawn map's layout (render.MAP_LAYOUT) where its dies line up with it
    and lie inside it; else as read (the picture's die grid)."""
    if not layout or layout[2] != d.k or (d.top - layout[0]) % d.k or (d.left - layout[1]) % d.k:
        return d
    r0, c0 = (d.top - layout[0]) // d.k, (d.left - layout[1]) // d.k
    h, w = d.grid.shape
    if r0 < 0 or c0 < 0 or r0 + h > layout[3] or c0 + w > layout[4]:
        return d
    d.origin, d.frame_shape, d.frame = (int(r0), int(c0)), (int(layout[3]), int(layout[4])), layout[5]
    return d


def geometry(grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per die: ``r`` (0 centre .. 1 rim), ``hour`` (1..12, 12 = up), ``zone`` (index into ZONES),
    ``quadrant`` (index into QUADRANTS). The centre is the middle of the wafer's bounding box."""
    on = np.argwhere(grid > 0)
    h, w = grid.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if len(on):
        (r0, c0), (r1, c1) = on.min(0), on.max(0)
        cy, cx = (r0 + r1) / 2, (c0 + c1) / 2
    else:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    dy, dx = yy - cy, xx - cx
    dist = np.hypot(dy, dx)
    rim = (dist[grid > 0].max() if len(on) else dist.max()) + 0.5
    r = dist / rim
    ang = np.mod(np.arctan2(dx, -dy), 2 * np.pi)  # clockwise from 12 o'clock
    hour = np.mod(np.rint(ang / (np.pi / 6)) - 1, 12) + 1
    zone = np.minimum((r * 3).astype(int), 2)
    quad = np.where(dy < 0, np.where(dx >= 0, 0, 1), np.where(dx < 0, 2, 3))
    return {"r": r, "hour": hour.astype(int), "zone": zone, "quadrant": quad}
