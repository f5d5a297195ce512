"""Where a die mask lies, in words (en/zh): clock position, radius band and extent.

Clock hours are as drawn (12 o'clock = top of the image); the radius bands are the thirds of the wafer's
radius (:data:`.dies.ZONES`). The shape decides the wording: a ring (most clock hours covered), a line (long
and thin: its two ends), a region at the centre, or a spot/arc with its clock position.
"""

from __future__ import annotations

import numpy as np

from .dies import ZONES, geometry
from .knowledge import ZH_NAME

ZONE_ZH = {"centre": "中心区", "middle": "中间区", "edge": "边缘区"}
ZONE_EN = {"centre": "centre", "middle": "middle ring", "edge": "edge"}


def _hour_of(dy: float, dx: float) -> int:
    ang = np.mod(np.arctan2(dx, -dy), 2 * np.pi)
    return int(np.mod(np.rint(ang / (np.pi / 6)) - 1, 12) + 1)


def _shape(pts: np.ndarray) -> tuple[float, np.ndarray]:
    """(elongation: major / minor spread, major axis) of (n, 2) die coordinates."""
    if len(pts) < 3:
        return 1.0, np.array([1.0, 0.0])
    cov = np.cov((pts - pts.mean(0)).T)
    vals, vecs = np.linalg.eigh(cov)
    return float(np.sqrt(max(vals[1], 1e-9) / max(vals[0], 0.25))), vecs[:, 1]


def describe(pattern: str, mask: np.ndarray, grid: np.ndarray, zh: str | None = None) -> dict:
    """{clock, radius_band, extent, text: {en, zh}} for the dies of ``mask`` on the map ``grid``; ``zh``: the
    pattern's Chinese name where the model's taxonomy gives one (default: the 8 known patterns')."""
    zp = zh or ZH_NAME.get(pattern, pattern)
    if not mask.any():
        return {"clock": None, "radius_band": None, "extent": "none",
                "text": {"en": f"{pattern}: no single dies stand out.", "zh": f"{zp}：没有突出的芯片。"}}
    geo = geometry(grid)
    pts = np.argwhere(mask).astype(float)
    r, hours, zones = geo["r"][mask], geo["hour"][mask], geo["zone"][mask]
    band = ZONES[int(np.bincount(zones, minlength=3).argmax())]
    on = np.argwhere(grid > 0)
    c = (on.min(0) + on.max(0)) / 2
    cen = pts.mean(0)
    clock = _hour_of(cen[0] - c[0], cen[1] - c[1])
    n_hours = len(set(hours.tolist()))
    elong, axis = _shape(pts)
    if n_hours >= 10 and float(np.median(r)) > 1 / 3:
        spread = float(np.percentile(r, 90) - np.percentile(r, 10))
        extent = "ring" if spread < 0.45 else "whole wafer"
        en = (f"{pattern}: a ring all around the {ZONE_EN[band]}" if extent == "ring"
              else f"{pattern}: across the whole wafer")
        zh = f"{zp}：{ZONE_ZH[band]}一整圈环状分布" if extent == "ring" else f"{zp}：遍布整片晶圆"
        return {"clock": None, "radius_band": band, "extent": extent, "text": {"en": en + ".", "zh": zh + "。"}}
    t = (pts - cen) @ axis
    ends = sorted([pts[int(np.argmin(t))], pts[int(np.argmax(t))]], key=lambda p: -float(np.hypot(*(p - c))))
    (h0, z0), (h1, z1) = [(_hour_of(*(p - c)), ZONES[int(geo["zone"][int(p[0]), int(p[1])])]) for p in ends]
    if elong >= 3 and len(pts) >= 5 and not z0 == z1 == "edge":  # along the rim it is an arc, not a line
        far = "the centre" if z1 == "centre" else f"the {h1} o'clock {ZONE_EN[z1]}"
        far_zh = "中心" if z1 == "centre" else f"{h1}点钟方向{ZONE_ZH[z1]}"
        return {"clock": h0, "radius_band": band, "extent": "line",
                "text": {"en": f"{pattern}: a line from the {h0} o'clock {ZONE_EN[z0]} towards {far}.",
                         "zh": f"{zp}：从{h0}点钟方向{ZONE_ZH[z0]}延伸至{far_zh}的线状分布。"}}
    if float(np.hypot(*(cen - c))) / max(float(np.abs(on - c).max()), 1.0) < 0.2 and band == "centre":
        return {"clock": None, "radius_band": band, "extent": "centre",
                "text": {"en": f"{pattern}: at the centre of the wafer, {len(pts)} dies.",
                         "zh": f"{zp}：位于晶圆中心，共{len(pts)}颗芯片。"}}
    lo, hi = _hour_span(hours)
    span_en = f"around {clock} o'clock" if lo == hi else f"from {lo} to {hi} o'clock"
    span_zh = f"{clock}点钟方向" if lo == hi else f"{lo}点至{hi}点钟方向"
    extent = "arc" if band == "edge" and lo != hi else "spot"
    dies = f"{len(pts)} die" + ("" if len(pts) == 1 else "s")
    return {"clock": clock, "radius_band": band, "extent": extent,
            "text": {"en": f"{pattern}: {span_en}, in the {ZONE_EN[band]} ({dies}).",
                     "zh": f"{zp}：{span_zh}，{ZONE_ZH[band]}（{len(pts)}颗芯片）。"}}


def _hour_span(hours: np.ndarray) -> tuple[int, int]:
    """Smallest clockwise run of hours holding 90% of the dies: (first, last)."""
    counts = np.bincount(hours - 1, minlength=12)
    need = 0.9 * counts.sum()
    for width in range(1, 13):
        for start in range(12):
            if counts[[(start + j) % 12 for j in range(width)]].sum() >= need:
                return start + 1, (start + width - 1) % 12 + 1
    return 1, 12
