"""The images of many conversations at once: the one loader behind ``eval`` and ``predict``.

References a domain reads in bulk (``Domain.load_batch``, e.g. the wafer domain's ``file.npz#N``: each file
read once, maps left as die grids for the head to draw on the device) are taken first; the rest go through
:func:`domainvlm.data.images.load_image` on the shared thread pool. A conversation whose image cannot be
read gets one message naming its row and the reference instead, and the others carry on.
"""

from __future__ import annotations

from .. import domains
from ..data.images import load_image
from ..errors import UserError
from .prefetch import parallel_map

Item = tuple  # (messages, image refs, base_dir, where): ``where`` names the row in messages ("record 7")


def _named(where: str, e: UserError) -> str:
    msg = str(e)
    return msg if msg.startswith(where) else f"{where}: {msg}"


def _bulk(items: list[Item], size: int | None) -> dict[tuple[int, int], object]:
    """(item, image) -> what a domain's ``load_batch`` made of that reference (image or UserError)."""
    keys = [(k, j) for k, it in enumerate(items) for j in range(len(it[1]))]
    got: dict[tuple[int, int], object] = {}
    for d in domains.all_domains():
        todo = [key for key in keys if key not in got]
        if d.load_batch is None or not todo:
            continue
        res = d.load_batch([(items[k][1][j], items[k][2]) for k, j in todo], size)
        got.update((key, r) for key, r in zip(todo, res) if r is not None)
    return got


def load_conversations(items: list[Item], size: int | None = None) -> list[tuple]:
    """Per item ``((messages, images), None)``, or ``(None, message)`` when one of its images cannot be read.

    ``size``: the model's fixed square input side (``Engine.canvas_size``), at which drawn items such as raw
    wafer maps are drawn directly."""
    got = _bulk(items, size)

    def one(k: int):
        messages, refs, base, where = items[k]
        try:
            images = []
            for j, ref in enumerate(refs):
                im = got.get((k, j))
                if isinstance(im, UserError):
                    raise im
                images.append(im if im is not None else load_image(ref, base, size))
            return (messages, images), None
        except UserError as e:
            return None, _named(where, e)

    slow = [k for k, it in enumerate(items) if any((k, j) not in got for j in range(len(it[1])))]
    done = dict(zip(slow, parallel_map(one, slow)))
    return [done[k] if k in done else one(k) for k in range(len(items))]

