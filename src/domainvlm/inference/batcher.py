"""Micro-batcher: concurrent callers (HTTP requests, web sessions) share one :class:`Engine` safely.

Non-streaming requests wait in a bounded queue; one worker thread takes whatever is waiting (up to
``max_batch``, after at most ``max_wait_ms``), groups requests with identical sampling settings and runs each
group as one batched ``Engine.generate``. A failing batch is split in halves and retried until the failing
request is isolated, so one bad request cannot fail its neighbours. Streaming requests go straight to
``Engine.stream``; the engine lock serialises them against the batches. A full queue raises :class:`Busy` (the server answers 503) instead of growing without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import astuple
from typing import Iterator

from .engine import Engine, Sampling


class Busy(RuntimeError):
    """The request queue is full."""


class Batcher:
    def __init__(self, engine: Engine, max_batch: int = 8, max_wait_ms: float = 5.0, max_queue: int = 256):
        self.engine, self.max_batch, self.max_wait = engine, max(1, max_batch), max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._q: queue.Queue = queue.Queue()
        self._pending = 0  # queued + running; guarded by _count_lock
        self._count_lock = threading.Lock()
        self._closed = False
        self.batches_run = 0  # observability (/health) and tests: proves requests really were batched
        self.largest_batch = 0
        self._worker = threading.Thread(target=self._loop, name="domainvlm-batcher", daemon=True)
        self._worker.start()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> Future:
        """Queue one conversation; the Future resolves to the answer text (or the generation error)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        with self._count_lock:
            if self._pending >= self.max_queue:
                raise Busy(f"server busy: {self._pending} requests queued (limit {self.max_queue})")
            self._pending += 1
        fut: Future = Future()
        self._q.put((messages, images, sampling or Sampling(), fut))
        return fut

    def generate(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> str:
        return self.submit(messages, images, sampling).result()

    def stream(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> Iterator[str]:
        return self.engine.stream(messages, images, sampling)

    def close(self) -> None:
        self._closed = True
        self._q.put(None)

    def _take(self) -> list | None:
        first = self._q.get()
        if first is None:
            return None
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            try:
                job = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._q.put(None)  # keep the shutdown signal for the loop
                break
            jobs.append(job)
        return jobs

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            # a caller that gave up (cancelled future) costs nothing
            live = [j for j in jobs if j[3].set_running_or_notify_cancel()]
            groups: dict[tuple, list] = {}
            for j in live:
                groups.setdefault(astuple(j[2]), []).append(j)
            for group in groups.values():
                self._run(group)
            with self._count_lock:
                self._pending -= len(jobs)

    def _run(self, group: list) -> None:
        try:
            answers = self.engine.generate([(m, i) for m, i, _, _ in group], group[0][2])
        except Exception as e:  # noqa: BLE001 - bisect to isolate the culprit; the rest stay batched
            if len(group) > 1:
                self._run(group[: len(group) // 2])
                self._run(group[len(group) // 2:])
                return
            group[0][3].set_exception(e)
            return
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(group))
        for job, ans in zip(group, answers):
            job[3].set_result(ans)
