"""Keeping the origin serving from local memory while the shared store is down.

:class:`StoreHealth` knows whether the shared store (Redis) answers;
:class:`FallbackSessionStore` and :class:`FallbackPopulationStore` write through
to a local store and answer from it during an outage: one warning per outage,
every operation served locally counted in ``cadenza_redis_fallbacks_total``,
``cadenza_redis_up`` at 0, and the shared store tried again after
``redis_retry_s``.  Nothing here imports redis: the shared store's errors
arrive as :class:`~cadenza.origin.errors.StoreUnavailableError`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cadenza.abr.policy import Population
from cadenza.abr.session import SessionState
from cadenza.origin.errors import StoreUnavailableError
from cadenza.origin.metrics import Metrics
from cadenza.origin.sessions import PopulationStore, SessionStore

log = logging.getLogger("cadenza.origin.redis")

T = TypeVar("T")


class StoreHealth:
    """Whether the shared store answers; one per app, shared by both fallback stores.

    The first failure of an outage logs one warning, sets ``cadenza_redis_up``
    to 0 and starts a back-off of ``retry_s``: until it ends no operation
    waits on Redis.  Then one operation (the first to ask) tries Redis again;
    success ends the outage (logged once, at info), failure restarts the
    back-off."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        *,
        retry_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self.retry_s = retry_s
        self._metrics = metrics
        self._clock = clock
        self.up = True
        self.outages = 0
        self._down_since_s = -math.inf
        self._retry_at_s = -math.inf
        if metrics is not None:
            metrics.redis_up.set(1)

    def attempt(self) -> float | None:
        """When Redis may be used now: the attempt's start time; else None.

        While down, the first caller after the back-off claims the retry (the
        next one is pushed ``retry_s`` on), so only one request probes."""
        now = self._clock()
        if self.up:
            return now
        if now < self._retry_at_s:
            return None
        self._retry_at_s = now + self.retry_s
        return now

    def failed(self, exc: Exception) -> None:
        now = self._clock()
        self._retry_at_s = now + self.retry_s
        if not self.up:
            return
        self.up = False
        self.outages += 1
        self._down_since_s = now
        if self._metrics is not None:
            self._metrics.redis_up.set(0)
        log.warning(
            "redis unavailable (%s): serving sessions and priors from this process's "
            "memory; retrying every %gs",
            exc,
            self.retry_s,
        )

    def succeeded(self, started: float) -> None:
        # An operation that began before the outage was noticed proves nothing.
        if self.up or started < self._down_since_s:
            return
        self.up = True
        if self._metrics is not None:
            self._metrics.redis_up.set(1)
        log.info(
            "redis is back after outage %d: sessions and priors are shared again", self.outages
        )

    async def call(
        self,
        store: str,
        shared: Callable[[], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
    ) -> T:
        """``shared()`` when Redis may be used and answers, else ``local()``, counted."""
        started = self.attempt()
        if started is not None:
            try:
                result = await shared()
            except StoreUnavailableError as exc:
                self.failed(exc)
            else:
                self.succeeded(started)
                return result
        if self._metrics is not None:
            self._metrics.redis_fallbacks.labels(store).inc()
        return await local()

    async def check(self) -> bool:
        """Ping Redis unless in back-off; True when it is up (for ``/readyz``)."""
        started = self.attempt()
        if started is not None:
            try:
                await self._ping()
            except StoreUnavailableError as exc:
                self.failed(exc)
            else:
                self.succeeded(started)
        return self.up


async def _nothing() -> None:
    return None


class FallbackSessionStore:
    """Sessions in ``primary`` (Redis), written through to ``local`` (memory).

    While the primary is unavailable every operation is answered from local
    state, so a replica keeps the sessions it served; when it returns, a
    local state newer than the shared one wins and is written back by the
    session's next update."""

    def __init__(self, primary: SessionStore, local: SessionStore, health: StoreHealth) -> None:
        self.primary = primary
        self.local = local
        self.health = health

    async def get(self, sid: str) -> SessionState | None:
        local = await self.local.get(sid)

        async def shared() -> SessionState | None:
            state = await self.primary.get(sid)
            if local is not None and (state is None or local.last_seen_s > state.last_seen_s):
                return local
            return state

        async def kept() -> SessionState | None:
            return local

        return await self.health.call("sessions", shared, kept)

    async def put(self, state: SessionState) -> None:
        await self.local.put(state)
        await self.health.call("sessions", lambda: self.primary.put(state), _nothing)

    @property
    def evictions(self) -> int:
        """The shared store's trims (the local copy's own evictions are a cache's)."""
        count: int = getattr(self.primary, "evictions", 0)
        return count

    async def active(self) -> list[SessionState]:
        return await self.health.call("sessions", self.primary.active, self.local.active)

    async def count(self) -> int:
        return await self.health.call("sessions", self.primary.count, self.local.count)


class FallbackPopulationStore:
    """Population samples in ``primary`` (Redis), written through to ``local``."""

    def __init__(
        self, primary: PopulationStore, local: PopulationStore, health: StoreHealth
    ) -> None:
        self.primary = primary
        self.local = local
        self.health = health

    async def record(self, key: str, sid: str, estimate_bps: float) -> None:
        await self.local.record(key, sid, estimate_bps)
        await self.health.call(
            "population", lambda: self.primary.record(key, sid, estimate_bps), _nothing
        )

    async def prior(self, key: str) -> Population | None:
        return await self.health.call(
            "population", lambda: self.primary.prior(key), lambda: self.local.prior(key)
        )

    async def samples(self) -> list[float]:
        return await self.health.call("population", self.primary.samples, self.local.samples)
