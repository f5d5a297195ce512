"""Is this image a wafer map at all? A cheap check before the wafer head diagnoses it.

A rendered wafer map is an image of very few flat colours whose die area (everything but the background
colour around it) is roughly round: a disc or an ellipse of dies. Radiographs and photographs have hundreds of
grey levels, noise and gradients too; a blank image has no die area. A map in the wafer palette is read exactly
(pass / fail dies): one with no dies, or no passing die, carries nothing to diagnose (``unreadable``).

:func:`check` returns None for a wafer map, else ``(reason, detail)`` with reason
:data:`~domainvlm.inference.assessment.OUT_OF_DOMAIN` or :data:`~domainvlm.inference.assessment.UNREADABLE`
and ``detail`` a short key of :data:`WHY` (worded in en and zh for the answer).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...inference.assessment import OUT_OF_DOMAIN, UNREADABLE
from .render import PALETTE, palette_index

MIN_COVER = 0.9  # share of pixels in the 4 commonest (coarsened) colours: a wafer map is flat colour
MIN_ELLIPSE_IOU = 0.85  # die area vs its bounding box's ellipse: val maps >= 0.89 (0.1th pct), a square 0.785
MIN_ASPECT = 0.4  # WM-811K die areas go down to 22 x 50 dies (0.44)

WHY = {
    "colours": ("it has the many shades of a photograph or radiograph, not the few flat colours of a wafer map",
                "它具有照片或X光片的丰富灰度，而不是晶圆图的少数几种纯色"),
    "blank": ("it is blank: there is no die area", "图像是空白的：没有芯片区域"),
    "shape": ("its coloured area is not the round die area of a wafer", "其着色区域不是晶圆的圆形芯片区域"),
    "no_dies": ("the map has no dies", "晶圆图上没有芯片"),
    "all_fail": ("every die on the map fails, so no defect pattern can be told apart",
                 "晶圆图上所有芯片均失效，无法区分缺陷模式"),
}


def check(img) -> tuple[str, str] | None:
    """None for a wafer map, else (reason, WHY key). A die grid not yet drawn (batch_load.MapCanvas, from a
    wafer npz) is checked on its dies: no picture is drawn on the host for it."""
    grid = getattr(img, "grid", None)
    if grid is not None:
        if not (grid > 0).any():
            return UNREADABLE, "no_dies"
        if not (grid == 1).any():
            return UNREADABLE, "all_fail"
        return None if _round(grid > 0) else (OUT_OF_DOMAIN, "shape")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    full = np.asarray(rgb)
    lab = _palette(full)  # every other pixel (host time per map); exact counts below read all pixels
    if lab is not None:  # the wafer palette: 0 off-wafer, 1 pass, 2 fail
        red = full[..., 0]
        if not (lab > 0).any() and not (red != PALETTE[0][0]).any():
            return UNREADABLE, "no_dies"
        if not (lab == 1).any() and not (red == PALETTE[1][0]).any():
            return UNREADABLE, "all_fail"
        return None if _round(lab > 0) else (OUT_OF_DOMAIN, "shape")
    a = (full[::2, ::2] if min(full.shape[:2]) >= 128 else full) >> 3  # coarsened colours: tolerant of re-encoding noise
    codes = (a[..., 0].astype(np.int32) << 10) | (a[..., 1].astype(np.int32) << 5) | a[..., 2]
    _, counts = np.unique(codes, return_counts=True)
    if np.sort(counts)[::-1][:4].sum() < MIN_COVER * codes.size:
        return OUT_OF_DOMAIN, "colours"
    border = np.concatenate([codes[0], codes[-1], codes[:, 0], codes[:, -1]])
    vals, n = np.unique(border, return_counts=True)
    die = codes != vals[n.argmax()]
    if die.sum() < 0.02 * die.size:
        return OUT_OF_DOMAIN, "blank"
    return None if _round(die) else (OUT_OF_DOMAIN, "shape")


_R = np.full(256, 255, np.uint8)
for _i, _c in PALETTE.items():
    _R[_c[0]] = _i  # the palette's red values differ: red alone names a palette colour
_RGB = np.array([PALETTE[i] for i in range(3)] + [(0, 0, 0)], np.uint8)


def _palette(a: np.ndarray) -> np.ndarray | None:
    """Palette index of every other pixel of an exact render (red names the colour, all channels checked),
    else of a re-encoded palette image (render.palette_index, tolerant), else None."""
    s = a[::2, ::2] if min(a.shape[:2]) >= 128 else a  # small canvases: every pixel, or shapes blur
    lab = _R[s[..., 0]]
    if (lab != 255).all() and (_RGB[lab, 1] == s[..., 1]).all() and (_RGB[lab, 2] == s[..., 2]).all():
        return lab
    lab = palette_index(Image.fromarray(a), tol=24)
    return None if lab is None else lab[::2, ::2] if min(a.shape[:2]) >= 128 else lab


def _round(die: np.ndarray) -> bool:
    """Does the die mask look like a disc / ellipse: its bounding box's ellipse overlaps it closely."""
    rows, cols = np.flatnonzero(die.any(1)), np.flatnonzero(die.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = r1 - r0, c1 - c0
    if min(h, w) < 3 or min(h, w) / max(h, w) < MIN_ASPECT:
        return False
    yy = (np.arange(h)[:, None] + 0.5 - h / 2) / (h / 2)
    xx = (np.arange(w)[None, :] + 0.5 - w / 2) / (w / 2)
    ell = yy * yy + xx * xx <= 1.0
    sub = die[r0:r1, c0:c1]
    return (sub & ell).sum() >= MIN_ELLIPSE_IOU * (sub | ell).sum()


def message(reason: str, detail: str, lang: str) -> str:
    """The answer in the question's language when the head abstains for the input itself."""
    why = WHY[detail][lang == "zh"]
    if reason == UNREADABLE:
        return (f"无法诊断：{why}。请检查晶圆图数据。" if lang == "zh"
                else f"No diagnosis: {why}. Please check the wafer-map data.")
    return (f"这张图像看起来不是晶圆图：{why}。我只诊断晶圆图（每个芯片的通过/失效），因此不做诊断。" if lang == "zh"
            else f"This image does not look like a wafer map: {why}. I diagnose wafer maps (pass/fail dies of "
                 f"one wafer) only, so I give no diagnosis.")
