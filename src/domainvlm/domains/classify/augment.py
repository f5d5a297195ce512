"""Photo augmentations for classification training (labels unchanged): flips, 90-degree rotations, a random
crop resized back, brightness and contrast. ``augment_image`` works on one PIL image (the generic trainer,
``augment=domain``); ``augment_batch`` does the same on a (B, H, W, C) uint8 batch on the GPU (recipe.py).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

CROP_SCALE = (0.6, 1.0)   # share of the side kept by a random crop
JITTER = 0.2              # brightness / contrast factors in [1 - JITTER, 1 + JITTER]


def augment_image(image, rng: random.Random, crop_scale=CROP_SCALE, jitter: float = JITTER):
    from PIL import Image, ImageEnhance

    w, h = image.size
    s = rng.uniform(*crop_scale)
    cw, ch = max(1, round(w * s)), max(1, round(h * s))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = image.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    k = rng.randrange(4)
    if k and w == h:  # a quarter turn keeps the size only for square images
        im = im.transpose([Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270][k - 1])
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(1 - jitter, 1 + jitter))
    return ImageEnhance.Contrast(im).enhance(rng.uniform(1 - jitter, 1 + jitter))


def augment_batch(x: torch.Tensor, gen: torch.Generator, crop_scale=CROP_SCALE, jitter: float = JITTER,
                  identity_frac: float = 0.0) -> torch.Tensor:
    """(B, H, W, C) uint8 -> augmented (B, H, W, C) uint8, per sample: a crop resized back (bilinear), one of
    the 8 dihedral transforms, brightness and contrast. ``identity_frac`` of the samples pass unchanged."""
    b, h, w, c = x.shape
    dev = x.device
    r = lambda *s: torch.rand(*s, device=dev, generator=gen)  # noqa: E731
    img = x.permute(0, 3, 1, 2).float()
    s = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * r(b)
    cx, cy = (1 - s) * (2 * r(b) - 1), (1 - s) * (2 * r(b) - 1)  # crop centre, kept inside the image
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, cx, cy
    grid = F.affine_grid(theta, (b, c, h, w), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    k = torch.randint(0, 8, (b,), device=dev, generator=gen)
    if h != w:  # quarter turns would change the shape: half turns and mirrors only
        k = k - k % 2
    out = torch.empty_like(img)
    for t in range(8):
        sel = (k == t).nonzero().flatten()
        if len(sel):
            y = img[sel].rot90(t % 4, dims=(2, 3))
            out[sel] = y.flip(3) if t >= 4 else y
    bright = 1 + jitter * (2 * r(b, 1, 1, 1) - 1)
    contrast = 1 + jitter * (2 * r(b, 1, 1, 1) - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out * bright - mean * bright) * contrast + mean * bright).clamp(0, 255)
    if identity_frac > 0:
        keep = r(b) < identity_frac
        out[keep] = x[keep].permute(0, 3, 1, 2).float()
    return out.round().to(torch.uint8).permute(0, 2, 3, 1)
