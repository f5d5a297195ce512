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

from ...inference.assessment import NO_IMAGE, OUT_OF_DOMAIN, UNREADABLE
from .render import PALETTE, flat_array, palette_index

MIN_COVER = 0.9  # share of pixels in the 4 commonest (coarsened) colours: a wafer map is flat colour
MIN_ELLIPSE_IOU = 0.85  # die area vs its bounding box's ellipse: val maps >= 0.89 (0.1th pct), a square 0.785
MIN_ASPECT = 0.33  # WM-811K die areas go down to 84 x 212 dies (0.40)

WHY = {
    "colours": ("it has the many shades of a photograph or radiograph, not the few flat colours of a wafer map",
                "它具有照片或X光片的丰富灰度，而不是晶圆图的少数几种纯色"),
    "blank": ("it is blank: there is no die area", "图像是空白的：没有芯片区域"),
    "shape": ("its coloured area is not the round die area of a wafer", "其着色区域不是晶圆的圆形芯片区域"),
    "no_dies": ("the map has no dies", "晶圆图上没有芯片"),
    "all_fail": ("every die on the map fails, so no defect pattern can be told apart",
                 "晶圆图上所有芯片均失效，无法区分缺陷模式"),
    "palette": ("its colours are not the wafer-map palette I read", "其颜色不是我能读取的晶圆图配色"),
}
PALETTE_TOL = 32  # a dominant colour this close (per channel) to a palette colour is that colour, re-encoded


PALETTE_MESSAGE = (
    "No diagnosis: the colours of this picture are not the wafer-map palette I read (off-wafer dark purple, pass "
    "teal, fail yellow), and I do not guess which colour is a failing die. Please give the map itself: an npz "
    "of die values (0 off-wafer, 1 pass, 2 fail; file.npz#N) or a fab map file (SEMI G85 / E142, STDF, KLARF), "
    "or draw it in that palette (domainvlm.domains.wafer.render.render_map).",
    "无法诊断：这张图的颜色不是我能读取的晶圆图配色（晶圆外为深紫色、合格为青绿色、失效为黄色），"
    "我不会猜测哪种颜色代表失效芯片。请直接提供晶圆图数据：芯片值的 npz 文件（0 晶圆外、1 合格、2 失效；"
    "file.npz#N），或晶圆图文件（SEMI G85 / E142、STDF、KLARF），或用该配色绘制"
    "（domainvlm.domains.wafer.render.render_map）。")

FROM_MAP_DATA = "domainvlm.wafer_map_data"  # PIL info key: drawn from a wafer data / map file (see check)


def mark_map_data(img):
    """Mark a picture drawn from wafer map data (npz, fab map file): :func:`check` then skips its outline."""
    img.info[FROM_MAP_DATA] = True
    return img


def check(img, all_fail_ok: bool = False) -> tuple[str, str] | None:
    """None for a wafer map, else (reason, WHY key). ``all_fail_ok``: a map whose every die fails is a
    diagnosis of the taxonomy (its ``all_fail`` class), not unreadable. A die grid not yet drawn
    (batch_load.MapCanvas) comes from a wafer data file, so it is a wafer map whatever its outline (WM-811K
    has sparse test-site maps and 2.5:1 outlines): only its dies are checked, no picture is drawn for it; so
    for a picture drawn from such a file (:func:`mark_map_data`)."""
    grid = getattr(img, "grid", None)
    if grid is not None:
        return _dies(grid > 0, grid == 1, all_fail_ok)
    from_data = bool(getattr(img, "info", {}).get(FROM_MAP_DATA))
    full = flat_array(img)  # a transparent or non-palette margin is off-wafer, as the head reads it
    lab = _palette(full)  # every other pixel (host time per map); exact counts below read all pixels
    if lab is not None:  # the wafer palette: 0 off-wafer, 1 pass, 2 fail
        red = full[..., 0]
        bad = _dies((lab > 0).any() or (red != PALETTE[0][0]).any(), (lab == 1).any() or (red == PALETTE[1][0]).any(),
                    all_fail_ok)
        return bad or (None if from_data or _round(lab > 0) else (OUT_OF_DOMAIN, "shape"))
    a = (full[::2, ::2] if min(full.shape[:2]) >= 128 else full) >> 3  # coarsened colours: tolerant of re-encoding noise
    codes = (a[..., 0].astype(np.int32) << 10) | (a[..., 1].astype(np.int32) << 5) | a[..., 2]
    colours, counts = np.unique(codes, return_counts=True)
    if np.sort(counts)[::-1][:4].sum() < MIN_COVER * codes.size:
        return OUT_OF_DOMAIN, "colours"
    border = np.concatenate([codes[0], codes[-1], codes[:, 0], codes[:, -1]])
    vals, n = np.unique(border, return_counts=True)
    die = codes != vals[n.argmax()]
    if die.sum() < 0.02 * die.size:
        return OUT_OF_DOMAIN, "blank"
    if not _round(die):
        return OUT_OF_DOMAIN, "shape"
    # A round map of flat colours that are not ours (black / grey / red): which colour is a failing die can
    # only be guessed, and the nearest palette colour was a confident wrong answer; a re-encoded (JPEG) render
    # of our palette keeps its dominant colours near the palette and is read as before.
    return None if _palette_colours(colours, counts, codes.size) else (OUT_OF_DOMAIN, "palette")


def _palette_colours(colours: np.ndarray, counts: np.ndarray, n: int) -> bool:
    """Are the commonest coarse colours (those covering MIN_COVER of the ``n`` pixels) all near palette colours?"""
    order = np.argsort(counts)[::-1]
    top = colours[order[:np.searchsorted(np.cumsum(counts[order]), MIN_COVER * n) + 1]]
    rgb = np.stack([(top >> 10) & 31, (top >> 5) & 31, top & 31], -1) * 8 + 4
    near = np.abs(rgb[:, None, :] - np.array(list(PALETTE.values()))[None]).max(-1) <= PALETTE_TOL
    return bool(near.any(1).all())


def _dies(any_die, any_pass, all_fail_ok: bool):
    if not np.any(any_die):
        return UNREADABLE, "no_dies"
    if not np.any(any_pass) and not all_fail_ok:
        return UNREADABLE, "all_fail"
    return None


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
    """Does the die area look like a disc / ellipse: each row filled between its outermost dies (a map of
    only edge and test-site dies is a disc too), then compared with its bounding box's ellipse."""
    rows, cols = np.flatnonzero(die.any(1)), np.flatnonzero(die.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = r1 - r0, c1 - c0
    if min(h, w) < 3 or min(h, w) / max(h, w) < MIN_ASPECT:
        return False
    sub = die[r0:r1, c0:c1]
    first, last = sub.argmax(1), w - 1 - sub[:, ::-1].argmax(1)
    x = np.arange(w)[None, :]
    sub = (x >= first[:, None]) & (x <= last[:, None]) & sub.any(1)[:, None]
    yy = (np.arange(h)[:, None] + 0.5 - h / 2) / (h / 2)
    xx = (x + 0.5 - w / 2) / (w / 2)
    ell = yy * yy + xx * xx <= 1.0
    return (sub & ell).sum() >= MIN_ELLIPSE_IOU * (sub | ell).sum()


def check_batch(images: list, rgb=None, all_fail_ok: bool = False) -> list:
    """:func:`check` of each image, the exact wafer-palette pictures of a batch at once on ``rgb`` (their (B, H,
    W, 3) uint8 tensor as the head sees them, on a GPU): per picture on the host this is ~0.35 ms, more than
    a GPU takes to answer it (on a CPU the per-picture numpy check is faster, and is used). Die grids and pictures not in the exact palette go through :func:`check`."""
    out: list = [None] * len(images)
    todo = [i for i, im in enumerate(images)
            if getattr(im, "grid", None) is None and not getattr(im, "info", {}).get(FROM_MAP_DATA)]
    exact: list[int] = []
    if rgb is not None and todo and rgb.device.type != "cpu":  # on a CPU the numpy check per picture is faster
        exact = [i for i, ok in zip(todo, _exact_palette(rgb[todo])) if ok]
    done = set(exact)
    for i, im in enumerate(images):
        if i not in done:
            out[i] = check(im, all_fail_ok)
    if exact:
        for i, res in zip(exact, _palette_batch(rgb[exact], all_fail_ok)):
            out[i] = res
    return out


def _luts(dev):
    import torch

    return torch.from_numpy(_R).to(dev).long(), torch.from_numpy(_RGB).to(dev)


def _sub(rgb):
    return rgb[:, ::2, ::2] if min(rgb.shape[1:3]) >= 128 else rgb


def _exact_palette(rgb) -> list[bool]:
    lut, pal = _luts(rgb.device)
    s = _sub(rgb)
    lab = lut[s[..., 0].long()]
    col = pal[lab.clamp(max=3)]
    return ((lab != 255) & (col[..., 1] == s[..., 1]) & (col[..., 2] == s[..., 2])).flatten(1).all(1).tolist()


def _palette_batch(rgb, all_fail_ok: bool) -> list:
    """:func:`check`'s palette branch for exact palette pictures: die counts, then :func:`_round` per row."""
    import torch

    lut, _ = _luts(rgb.device)
    red = rgb[..., 0]
    lab = lut[_sub(rgb)[..., 0].long()]
    die = lab > 0
    any_die = (die.flatten(1).any(1) | (red != PALETTE[0][0]).flatten(1).any(1)).tolist()
    any_pass = ((lab == 1).flatten(1).any(1) | (red == PALETTE[1][0]).flatten(1).any(1)).tolist()
    b, h, w = die.shape
    rows, cols = die.any(2), die.any(1)
    ar_h, ar_w = torch.arange(h, device=die.device), torch.arange(w, device=die.device)
    r0, r1 = rows.int().argmax(1), h - rows.flip(1).int().argmax(1)
    c0, c1 = cols.int().argmax(1), w - cols.flip(1).int().argmax(1)
    first, last = die.int().argmax(2), w - 1 - die.flip(2).int().argmax(2)  # per row (B, h)
    fill = (ar_w >= first[..., None]) & (ar_w <= last[..., None]) & rows[..., None]
    hh, ww = (r1 - r0).float(), (c1 - c0).float()
    yy = (ar_h[None] - r0[:, None] + 0.5 - hh[:, None] / 2) / (hh[:, None] / 2).clamp(min=0.5)
    xx = (ar_w[None] - c0[:, None] + 0.5 - ww[:, None] / 2) / (ww[:, None] / 2).clamp(min=0.5)
    ell = yy[:, :, None] ** 2 + xx[:, None, :] ** 2 <= 1.0
    iou_ok = ((fill & ell).flatten(1).sum(1) >= MIN_ELLIPSE_IOU * (fill | ell).flatten(1).sum(1))
    short, long_ = torch.minimum(hh, ww), torch.maximum(hh, ww).clamp(min=1)
    round_ = (iou_ok & (short >= 3) & (short / long_ >= MIN_ASPECT)).tolist()
    return [_dies(d, p, all_fail_ok) or (None if r else (OUT_OF_DOMAIN, "shape"))
            for d, p, r in zip(any_die, any_pass, round_)]


def help_message(lang: str) -> str:
    """What the wafer expert answers, for a text-only turn it has no answer to (assess.help_answer)."""
    if lang == "zh":
        return ("我回答关于一张晶圆图的问题。请附上晶圆图（图像，或 npz、SEMI G85 / E142、STDF、KLARF 晶圆图文件）再提问，"
                "例如“这张晶圆图有什么缺陷模式？”、“良率是多少？”或“划痕在哪里？”。没有晶圆图时，我可以介绍某个缺陷模式，"
                "例如“什么是边缘环？”。")
    return ("I answer questions about one wafer map. Attach a map (an image, or a map file: npz, SEMI G85 / E142, "
            "STDF, KLARF) and ask, for example, \"What defect pattern does this wafer map show?\", \"What is the "
            "yield?\" or \"Where is the scratch?\". Without a map I can describe a pattern by name, e.g. \"What is "
            "an Edge-Ring pattern?\".")


def message(reason: str, detail: str, lang: str) -> str:
    """The answer in the question's language when the head abstains for the input itself (or its absence)."""
    if reason == NO_IMAGE:
        return ("诊断需要一张晶圆图，但这个问题没有附带晶圆图。请附上晶圆图（图像或晶圆图文件）后再问。" if lang == "zh"
                else "I need a wafer map to diagnose, and this question came without one. Please attach the "
                     "wafer map (an image or a map file) and ask again.")
    if detail == "palette":  # it may well be a wafer map: say how to give it so that it can be read
        return PALETTE_MESSAGE[lang == "zh"]
    why = WHY[detail][lang == "zh"]
    if reason == UNREADABLE:
        return (f"无法诊断：{why}。请检查晶圆图数据。" if lang == "zh"
                else f"No diagnosis: {why}. Please check the wafer-map data.")
    return (f"这张图像看起来不是晶圆图：{why}。我只诊断晶圆图（每个芯片的通过/失效），因此不做诊断。" if lang == "zh"
            else f"This image does not look like a wafer map: {why}. I diagnose wafer maps (pass/fail dies of "
                 f"one wafer) only, so I give no diagnosis.")
