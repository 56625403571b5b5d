"""Builds off the event loop: a bounded pool of threads (PyAV releases the GIL while it
encodes, so threads use every core), a bounded queue in front of it, and one build in
flight per key (single-flight): prefetches, concurrent requests and a ``HEAD`` followed
by a ``GET`` all wait for the same build.

A background build (:data:`~cadenza.store.api.READ_PRIORITY` is ``BACKGROUND``:
prefetch, read-ahead) starts only while a thread is left idle for players; otherwise it
is refused at once (:class:`~cadenza.store.errors.BuildBusyError`, counted
``deferred``), so warming never queues ahead of a build a player waits for.

A build the pool cannot take (``workers`` running and ``queue_max`` waiting) is
refused at once with :class:`~cadenza.store.errors.BuildBusyError` (the origin answers
``503`` with ``Retry-After``) rather than queued without bound.  A build runs to its
end even when every caller waiting for it goes away, so its result can still be kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from cadenza.packager.jit.events import BuildKind, BuildOutcome, JitEvents
from cadenza.store.api import READ_PRIORITY, ReadPriority
from cadenza.store.errors import BuildBusyError

T = TypeVar("T")
BACKEND: Final = "jit"


class BuildPool:
    def __init__(
        self, workers: int, queue_max: int, events: JitEvents, *, retry_after_s: int = 1
    ) -> None:
        self.workers = workers
        self.limit = workers + queue_max
        # Background builds run only below this many builds in flight: one thread is
        # always left for players (with one worker, only when it is idle).
        self.background_limit = max(1, workers - 1)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="cadenza-jit")
        self._events = events
        self._retry_after_s = retry_after_s
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self.pending = 0  # builds running or waiting for a thread
        self.started = 0  # builds ever started (tests: single-flight)

    async def run(self, key: str, kind: BuildKind, build: Callable[[], T]) -> tuple[T, bool]:
        """The result of ``build()`` for ``key``, and whether this call started it
        (False: it joined the build in flight)."""
        task = self._inflight.get(key)
        if task is not None:
            return await asyncio.shield(task), False
        if READ_PRIORITY.get() is ReadPriority.BACKGROUND and self.pending >= self.background_limit:
            self._events.built(kind, BuildOutcome.DEFERRED, 0.0)
            raise BuildBusyError(BACKEND, "no idle build thread for a background build", 1)
        if self.pending >= self.limit:
            self._events.built(kind, BuildOutcome.BUSY, 0.0)
            raise BuildBusyError(
                BACKEND,
                f"{self.pending} builds are running or waiting; ask again shortly",
                self._retry_after_s,
            )
        self.pending += 1
        self.started += 1
        task = asyncio.ensure_future(self._timed(kind, build))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(task), True

    def _done(self, key: str, task: asyncio.Task[Any]) -> None:
        self.pending -= 1
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it itself

    async def _timed(self, kind: BuildKind, build: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            value = await loop.run_in_executor(self._executor, build)
        except Exception:
            self._events.built(kind, BuildOutcome.FAILED, time.perf_counter() - started)
            raise
        self._events.built(kind, BuildOutcome.OK, time.perf_counter() - started)
        return value

    async def close(self) -> None:
        """Wait for the builds in flight, then stop the threads."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)
