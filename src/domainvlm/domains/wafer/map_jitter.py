"""Two training perturbations of wafer canvases that keep every label (both off by default; GPU-side, batched).

The expert fits its train maps almost perfectly (MixedWM38: 99.8 % exact match on train against 98.0 % on val),
so these target what a model can memorise about one map beyond its pattern:

* :func:`random_shift` moves the whole wafer by a few pixels. A MixedWM38 die is a 4-pixel block and a patch 16
  pixels, so every map otherwise falls on the patch grid in the same phase; a shift of a few pixels changes
  which dies share a patch and how each die is cut, not what the wafer shows. Never beyond the map's margin on
  the canvas, so no die is lost.
* :func:`die_noise_batch` flips a small random share of a map's on-wafer dies between pass and fail, a fresh
  draw of the background noise every real map carries, die by die (each die stays one block of one colour).
"""

from __future__ import annotations

import torch


def _margin(geometry: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) free pixels on the map's tightest side of the canvas; 0 for maps subsampled onto it (k = 0)."""
    h, w, k, top, left = geometry.long().unbind(1)
    m = torch.stack([top, left, size - top - h * k, size - left - w * k], 1).amin(1)
    return torch.where(k > 0, m, torch.zeros_like(m)).clamp_min(0)


def shift_batch(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """(B, H, W) moved down by dy and right by dx pixels per sample; what moves in is 0 (off-wafer)."""
    _, h, w = x.shape
    ii = torch.arange(h, device=x.device)[None, :, None] - dy[:, None, None]
    jj = torch.arange(w, device=x.device)[None, None, :] - dx[:, None, None]
    ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
    n = torch.arange(len(x), device=x.device)[:, None, None]
    return torch.where(ok, x[n, ii.clamp(0, h - 1), jj.clamp(0, w - 1)], torch.zeros_like(x))


def random_shift(canvas: torch.Tensor, geometry: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Each map moved by (dy, dx), each uniform in [-m, m] with m = min(max_px, its margin). The margin is the
    same on all four sides after any of the 8 symmetries or a rotation, so ``geometry`` may be the map's
    before augmentation."""
    b, dev = len(canvas), canvas.device
    m = _margin(geometry, canvas.shape[-1]).clamp_max(max_px)
    dy = (torch.rand(b, device=dev, generator=gen) * (2 * m + 1)).long() - m
    dx = (torch.rand(b, device=dev, generator=gen) * (2 * m + 1)).long() - m
    return shift_batch(canvas, dy, dx)


def die_noise_batch(canvas: torch.Tensor, geometry: torch.Tensor, rate: float,
                    gen: torch.Generator) -> torch.Tensor:
    """Each map's on-wafer dies flipped pass <-> fail with probability u * rate, u uniform in [0, 1) per map
    (so many maps get almost none); one draw per die, applied to its whole k x k block. ``geometry`` rows are
    (h, w, k, top, left) of the canvas as it is (before any symmetry). Maps subsampled onto the canvas (k = 0)
    are left as they are."""
    b, size, _ = canvas.shape
    dev = canvas.device
    h, w, k, top, left = (geometry[:, i].long().view(b, 1, 1) for i in range(5))
    p = (torch.rand(b, device=dev, generator=gen) * rate).view(b, 1, 1)
    draw = torch.rand(b, size, size, device=dev, generator=gen)  # one per die (i, j): dies are < size a side
    kk = k.clamp_min(1)
    ax = torch.arange(size, device=dev)
    i = torch.div(ax.view(1, size, 1) - top, kk, rounding_mode="floor").clamp(0, size - 1)
    j = torch.div(ax.view(1, 1, size) - left, kk, rounding_mode="floor").clamp(0, size - 1)
    per_pixel = draw.reshape(b, -1).gather(1, (i * size + j).reshape(b, -1)).view(b, size, size)
    flip = (per_pixel < p) & (canvas > 0) & (k > 0)
    return torch.where(flip, 3 - canvas, canvas)
