"""Micro-batcher: concurrent callers (HTTP requests, web sessions) share one :class:`Engine` safely.

Requests wait in one bounded FIFO queue; a worker thread takes whatever is waiting (up to ``max_batch``, after
at most ``max_wait_ms``), groups requests with identical sampling settings and runs each group as one batched
generation. Streamed requests ride in the same batches (their text is handed over token by token), so under
load they are neither starved by nor starving the others. A failing batch is split in halves and retried
until the failing request is isolated, so one bad request cannot fail its neighbours. A full queue raises
:class:`Busy` (the server answers 503) instead of growing without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import astuple
from typing import Iterator

from .engine import Engine, Sampling

_END = object()


class Busy(RuntimeError):
    """The request queue is full."""


def image_bytes(images) -> int:
    """Memory of decoded PIL images (paths count 0: they are read when their batch runs). PIL keeps every
    multi-band or 32-bit image at 4 bytes a pixel (RGB too)."""
    return sum(im.width * im.height * (1 if im.mode in ("1", "L", "P") else 4) for im in images
               if hasattr(im, "getbands"))


class _Job:
    __slots__ = ("messages", "images", "sampling", "future", "sink", "cancelled", "emitted", "nbytes")

    def __init__(self, messages, images, sampling, sink=None):
        self.messages, self.images, self.sampling, self.sink = messages, images, sampling, sink
        self.nbytes = image_bytes(images)
        self.future: Future = Future()
        self.cancelled = self.emitted = False


class Batcher:
    def __init__(self, engine: Engine, max_batch: int = 8, max_wait_ms: float = 5.0, max_queue: int = 256,
                 max_image_bytes: int | None = None):
        self.engine, self.max_batch, self.max_wait = engine, max(1, max_batch), max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.max_image_bytes = max_image_bytes  # decoded images waiting or running; None = unbounded
        self.image_bytes = 0  # guarded by _count_lock
        self._q: queue.Queue = queue.Queue()
        self._pending = 0  # queued + running; guarded by _count_lock
        self._count_lock = threading.Lock()
        self._closed = False
        self.streams = 0  # stream iterators alive (observability)
        self.batches_run = 0  # observability (/health) and tests: proves requests really were batched
        self.largest_batch = 0
        self.busy_since: float | None = None  # monotonic start of the batch running now (/health: stuck?)
        self._worker = threading.Thread(target=self._loop, name="domainvlm-batcher", daemon=True)
        self._worker.start()

    @property
    def pending(self) -> int:
        return self._pending

    def busy_for(self) -> float:
        """Seconds the worker has been running its current batch (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _enqueue(self, job: _Job) -> _Job:
        job.sampling.check()  # bad settings fail this request now, not its whole batch later
        if self._closed:
            raise RuntimeError("batcher is closed")
        with self._count_lock:
            if self._pending >= self.max_queue:
                raise Busy(f"server busy: {self._pending} requests queued (limit {self.max_queue})")
            over = self.max_image_bytes and self.image_bytes + job.nbytes > self.max_image_bytes
            if over and self._pending:  # alone, a request may use it all: its images are bounded by their own limits
                raise Busy(f"server busy: {self.image_bytes / 2**20:,.0f} MB of decoded images queued; this "
                           f"request's {job.nbytes / 2**20:,.1f} MB would pass the budget of "
                           f"{self.max_image_bytes / 2**20:,.0f} MB")
            self._pending += 1
            self.image_bytes += job.nbytes
        self._q.put(job)
        return job

    def submit(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> Future:
        """Queue one conversation; the Future resolves to the answer text (or the generation error)."""
        return self._enqueue(_Job(messages, images, sampling or Sampling())).future

    def generate(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> str:
        return self.submit(messages, images, sampling).result()

    def stream(self, messages: list[dict], images: list, sampling: Sampling | None = None) -> Iterator[str]:
        """Queue one conversation (Busy if full) and return an iterator over its text pieces.

        Closing the iterator early ends that row's generation at the next token. The iterator's return value
        (``StopIteration.value``) is the final answer with its counts and finish reason."""
        job = self._enqueue(_Job(messages, images, sampling or Sampling(), queue.SimpleQueue()))
        return self._pieces(job)

    def _pieces(self, job: _Job) -> Iterator[str]:
        with self._count_lock:
            self.streams += 1
        try:
            while (item := job.sink.get()) is not _END:
                yield item
            return job.future.result()  # the final Answer (StopIteration.value); re-raises a generation error
        finally:
            job.cancelled = True
            with self._count_lock:
                self.streams -= 1

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
            # callers that gave up before their turn cost nothing
            live = [j for j in jobs if not j.cancelled and j.future.set_running_or_notify_cancel()]
            groups: dict[tuple, list] = {}
            for j in live:
                groups.setdefault(astuple(j.sampling), []).append(j)
            try:
                for group in groups.values():
                    self.busy_since = time.monotonic()
                    self._run(group)
            finally:
                self.busy_since = None
            for j in jobs:
                if j.sink is not None and not j.future.done():  # cancelled before it ran
                    j.sink.put(_END)
            with self._count_lock:
                self._pending -= len(jobs)
                self.image_bytes -= sum(j.nbytes for j in jobs)

    def _emit(self, group: list, row: int, piece: str) -> None:
        job = group[row]
        if job.sink is not None and not job.cancelled:
            job.emitted = True
            job.sink.put(piece)

    def _run(self, group: list) -> None:
        convs = [(j.messages, j.images) for j in group]
        try:
            if any(j.sink is not None for j in group):
                answers = self.engine.generate(convs, group[0].sampling,
                                               lambda i, s: self._emit(group, i, s), lambda i: group[i].cancelled)
            else:
                answers = self.engine.generate(convs, group[0].sampling)
        except Exception as e:  # noqa: BLE001 - bisect to isolate the culprit; the rest stay batched
            # a stream that already showed text cannot be replayed: it gets the error
            done = [j for j in group if j.emitted] if len(group) > 1 else group
            for j in done:
                self._finish(j, error=e)
            retry = [j for j in group if j not in done]
            if retry:
                self._run(retry[: len(retry) // 2 or 1])
                if len(retry) > 1:
                    self._run(retry[len(retry) // 2:])
            return
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(group))
        for job, ans in zip(group, answers):
            self._finish(job, answer=ans)

    @staticmethod
    def _finish(job: _Job, answer: str | None = None, error: BaseException | None = None) -> None:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(answer)
        if job.sink is not None:
            job.sink.put(_END)
