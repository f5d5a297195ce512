"""Many ``file.npz#N`` references at once, for eval and predict (``Domain.load_batch``).

:func:`domainvlm.data.images.load_image` draws each referenced map through PIL, one by one: on a GPU that host
time bounded eval at ~700 maps/s where the engine does thousands. Here each file is read once (the cached
set of :func:`.sources.get_map`) and every map stays its die grid, a :class:`MapCanvas`: the wafer head draws
a whole batch of them on the device (:func:`.canvas.canvas_batch`), the same pixels ``load_image(ref,
size=size)`` gives. Anything else (fab map files, PNGs, unreadable files) is left to ``load_image``, which
reports its problems exactly as before.
"""

from __future__ import annotations

import numpy as np

from ...errors import UserError


class MapCanvas:
    """A wafer map to be shown on the ``side`` x ``side`` canvas, kept as its die grid until drawn.

    Code that needs a picture calls :meth:`to_pil` (what ``load_image(ref, size=side)`` returns)."""

    __slots__ = ("grid", "side")

    def __init__(self, grid: np.ndarray, side: int):
        self.grid, self.side = grid, side

    def to_pil(self):
        from .render import render_map

        return render_map(self.grid, size=self.side)


def _wafer_set(path: str):
    """The cached WaferSet of a wafer npz, or None when ``path`` is none (left to load_image)."""
    from .sources import cached_wafer_set

    try:
        return cached_wafer_set(path)
    except UserError:
        return None


def load_batch(refs: list[tuple[str, object]], size: int | None) -> list:
    """Per ``(ref, base_dir)``: a :class:`MapCanvas`, a UserError for an index outside the file, or None (not
    an indexed map of a wafer npz, or no fixed ``size``: load_image draws it)."""
    from ...data.images import resolve

    out: list = [None] * len(refs)
    if not size:
        return out
    by_file: dict[tuple, list[tuple[int, int]]] = {}
    for k, (ref, base) in enumerate(refs):  # one resolve per file, not per map: this is host time per map
        path, sep, idx = ref.rpartition("#")  # the last '#', as data/images.resolve: 'LOT#42.npz#3'
        try:
            index = int(idx) if sep else None
        except ValueError:
            continue  # a bad index: load_image says so
        if index is not None:
            by_file.setdefault((path, base), []).append((k, index))
    for (path, base), items in by_file.items():
        p = resolve(path, base)[0]
        ws = _wafer_set(str(p))
        if ws is None:
            continue
        n = len(ws)
        for k, i in items:  # the message get_map gives
            out[k] = MapCanvas(ws.maps[i], size) if 0 <= i < n else UserError(
                f"{p}#{i}: index out of range (file has {n} maps)")
    return out


# ------------------------------------------------------------------------------------------ the head's side

def head_image(img, size: int):
    """What the wafer head answers about: a MapCanvas of its side as it is (drawn with its batch on the
    device), anything else as its canvas image (:func:`.canvas.canonical_image`)."""
    from ...data.images import load_image
    from .canvas import canonical_image

    if isinstance(img, MapCanvas):
        if img.side == size:
            return img
        img = img.to_pil()
    return canonical_image(load_image(img) if isinstance(img, str) else img, size)


_LUTS: dict = {}


def canvas_pixels(head, grids: list) -> tuple:
    """The head's (pixel_values, grid_thw) for die grids, drawn on its device: the same tensors as
    ``head.pixel_values`` of the maps rendered through PIL (tests/domains/wafer/test_batch_load.py)."""
    import torch

    from ...models.qwen_fast import patchify
    from .canvas import canvas_batch
    from .render import _LUT

    dev, s = head.model.device, head.size
    if str(dev) not in _LUTS:
        _LUTS[str(dev)] = torch.from_numpy(_LUT).to(dev)
    idx = canvas_batch(grids, s, device=dev)
    rgb = _LUTS[str(dev)].index_select(0, idx.view(-1).int()).view(*idx.shape, 3)
    pv = patchify(rgb, **head.patch_ip)
    return pv, torch.tensor([[1, s // head.ip["patch"], s // head.ip["patch"]]] * len(grids), device=dev)
