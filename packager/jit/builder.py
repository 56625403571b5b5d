"""Builds off the event loop: a bounded pool of threads (PyAV releases the GIL while it
encodes, so threads use every core), a bounded queue in front of it, and one build in
flight per key (single-flight): prefetches, concurrent requests and a ``HEAD`` followed
by a ``GET`` all wait for the same build.

A background build (:data:`~cadenza.store.api.READ_PRIORITY` is ``BACKGROUND``:
prefetch, read-ahead) runs on a thread of its own, at a lower CPU priority (``nice``
+10, Linux sets it per thread); when that thread is busy, on a player thread only while
another player thread stays idle; otherwise it is refused at once
(:class:`~cadenza.store.errors.BuildBusyError`, counted ``deferred``), never queued.
So a player always finds a thread, and a player's read of a key being built in the
background joins that build.

A build the pool cannot take (``workers`` running and ``queue_max`` waiting) is
refused at once with :class:`~cadenza.store.errors.BuildBusyError` (the origin answers
``503`` with ``Retry-After``) rather than queued without bound.  A build runs to its
end even when every caller waiting for it goes away, so its result can still be kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
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
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="cadenza-jit")
        self._ahead = ThreadPoolExecutor(
            1, thread_name_prefix="cadenza-jit-ahead", initializer=_lower_priority
        )
        self.ahead_busy = False  # the background thread is building
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
        if READ_PRIORITY.get() is ReadPriority.BACKGROUND:
            return await self._run_ahead(key, kind, build), True
        if self.pending >= self.limit:
            self._events.built(kind, BuildOutcome.BUSY, 0.0)
            raise BuildBusyError(
                BACKEND,
                f"{self.pending} builds are running or waiting; ask again shortly",
                self._retry_after_s,
            )
        return await self._run_player(key, kind, build), True

    async def _run_player(self, key: str, kind: BuildKind, build: Callable[[], T]) -> T:
        self.pending += 1
        self.started += 1
        task = asyncio.ensure_future(self._timed(kind, build))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(task)

    async def _run_ahead(self, key: str, kind: BuildKind, build: Callable[[], T]) -> T:
        if self.ahead_busy:
            if self.pending < self.workers - 1:  # a player thread stays idle beside it
                return await self._run_player(key, kind, build)
            self._events.built(kind, BuildOutcome.DEFERRED, 0.0)
            raise BuildBusyError(BACKEND, "no build thread is free for a background build", 1)
        self.ahead_busy = True
        self.started += 1
        task = asyncio.ensure_future(self._timed(kind, build, self._ahead))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._ahead_done(key, done))
        return await asyncio.shield(task)

    def _ahead_done(self, key: str, task: asyncio.Task[Any]) -> None:
        self.ahead_busy = False
        self._forget(key, task)

    def _done(self, key: str, task: asyncio.Task[Any]) -> None:
        self.pending -= 1
        self._forget(key, task)

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it itself

    async def _timed(
        self, kind: BuildKind, build: Callable[[], T], executor: ThreadPoolExecutor | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            value = await loop.run_in_executor(executor or self._executor, build)
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
        self._ahead.shutdown(wait=True)


def _lower_priority() -> None:
    """The background build thread yields the CPU to players' builds and to the event
    loop: Linux applies ``setpriority`` to the calling thread alone."""
    # Not permitted, or not Linux: the same priority, still one thread.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
