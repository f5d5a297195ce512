"""Overlap host-side input loading with generation: on a GPU, reading and rendering images one batch at a
time otherwise bounds the rate (eval did 61 maps/s on an H200 where the engine alone does thousands)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(chunks: Iterable[T], load: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """Yield ``(chunk, load(chunk))`` in order, loading the next chunk in a worker thread meanwhile.

    An exception in ``load`` is raised when its chunk is reached, as a plain loop would."""
    it = iter(chunks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        cur = next(it, _END)
        fut = pool.submit(load, cur) if cur is not _END else None
        while cur is not _END:
            nxt = next(it, _END)
            res = fut.result()
            fut = pool.submit(load, nxt) if nxt is not _END else None
            yield cur, res
            cur = nxt


_END = object()


def even_chunks(items: list, batch_size: int) -> Iterator[list]:
    """``items`` in consecutive chunks of at most ``batch_size``, as equal in size as possible (5,703 maps at
    2,048 -> 1,901 x 3, not 2,048 + 2,048 + 1,607): on a GPU a batch shape not seen before has one-off costs
    (cuDNN's attention plans were ~0.5 s per shape on an H200 before inference/attention.py), which a short
    last chunk would pay for a fraction of the work."""
    n = len(items)
    k = -(-n // batch_size) if n else 0
    for j in range(k):
        yield items[j * n // k:(j + 1) * n // k]


def default_batch_size(engine, cpu: int) -> int:
    """1024 where an answer head decodes on a GPU (small batches are launch-bound there), else ``cpu``."""
    return 1024 if engine.device.type == "cuda" and engine.has_head else cpu


@contextmanager
def frozen_heap():
    """For a long batch run (eval, predict): the model, the libraries and the records outlive it, so they are
    kept out of the collector's full passes meanwhile, which otherwise scan them all again and again while the
    batches run (host time per map). Afterwards they are collectable again (no leak in a long-lived process)."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


_POOL = None


def parallel_map(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``[fn(x) for x in items]`` over a small shared thread pool (one thread per core, at most 8): decoding
    and drawing images is mostly numpy and PIL work that releases the GIL. Exceptions surface in order."""
    global _POOL
    import os

    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(items) < 32:
        return [fn(x) for x in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
    step = -(-len(items) // (4 * workers))
    parts = list(_POOL.map(lambda s: [fn(x) for x in items[s:s + step]], range(0, len(items), step)))
    return [y for part in parts for y in part]
