"""Where per-session playback state is kept, and the edge's rate limits.

The state and its folding (:func:`cadenza.abr.session.apply_cmcd`) are pure
and live in :mod:`cadenza.abr.session`.  The stores only keep states:
:class:`MemorySessionStore` in a bounded map whose entries expire
(:class:`~cadenza.origin.expiring.ExpiringLru`) in this process;
:mod:`cadenza.origin.redis_store` implements the same protocols in Redis for
replicas that share sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

from cadenza.abr.policy import Population
from cadenza.abr.population import population_of
from cadenza.abr.session import SessionState
from cadenza.origin.expiring import ExpiringLru


class SessionStore(Protocol):
    """Where session states live.  Implementations bound their size and age."""

    async def get(self, sid: str) -> SessionState | None: ...

    async def put(self, state: SessionState) -> None: ...

    async def active(self) -> list[SessionState]: ...

    async def count(self) -> int: ...


class MemorySessionStore:
    """Sessions in this process: at most ``max_sessions``, forgotten ``ttl_s`` after
    their last update (least recently used evicted first)."""

    def __init__(self, max_sessions: int, ttl_s: float) -> None:
        self._cache: ExpiringLru[str, SessionState] = ExpiringLru(max_sessions, ttl_s)

    @property
    def evictions(self) -> int:
        """Sessions dropped for room (not those that expired): a flood's footprint."""
        return self._cache.evictions

    async def get(self, sid: str) -> SessionState | None:
        return self._cache.get(sid)

    async def put(self, state: SessionState) -> None:
        self._cache[state.sid] = state

    def get_now(self, sid: str) -> SessionState | None:
        """:meth:`get` without awaiting (a decided segment's read-change-write)."""
        return self._cache.get(sid)

    def put_now(self, state: SessionState) -> None:
        """:meth:`put` without awaiting."""
        self._cache[state.sid] = state

    async def active(self) -> list[SessionState]:
        self._cache.expire()
        return list(self._cache.values())

    async def count(self) -> int:
        self._cache.expire()
        return len(self._cache)


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated_s: float


def take_token(
    bucket: Bucket | None, now_s: float, rate_per_s: float, burst: float
) -> tuple[bool, Bucket]:
    """A token bucket: ``burst`` at once, then ``rate_per_s`` sustained."""
    if bucket is None:
        bucket = Bucket(burst, now_s)
    tokens = min(burst, bucket.tokens + max(0.0, now_s - bucket.updated_s) * rate_per_s)
    if tokens >= 1.0:
        return True, Bucket(tokens - 1.0, now_s)
    return False, Bucket(tokens, now_s)


class SessionLocks:
    """One :class:`asyncio.Lock` per session id with work in flight.

    Folding a beacon into a session reads, changes and writes it back; with a
    store that awaits I/O (Redis) two requests of one player (a segment and a
    beacon) could interleave and one update would be lost.  Serialising per
    ``sid`` inside a process prevents that.  A lock lives only while someone
    holds or waits for it, so the table is bounded by the requests in flight."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, sid: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(sid, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[sid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sid]
            if users == 1:
                del self._locks[sid]
            else:
                self._locks[sid] = (lock, users - 1)


class RateLimiter:
    """Token buckets per key, bounded in number and age."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: TTLCache[str, Bucket] = TTLCache(
            maxsize=max_keys, ttl=max(60.0, burst / max(rate_per_s, 1e-6))
        )

    def allow(self, key: str, now_s: float) -> bool:
        allowed, bucket = take_token(self._buckets.get(key), now_s, self.rate_per_s, self.burst)
        self._buckets[key] = bucket
        return allowed


class PopulationStore(Protocol):
    async def record(self, key: str, sid: str, estimate_bps: float) -> None: ...

    async def prior(self, key: str) -> Population | None: ...

    async def samples(self) -> list[float]: ...


class MemoryPopulationStore:
    """The latest throughput estimate of recent sessions, grouped by network key.

    Priors are recomputed at most once a second per key: they move slowly,
    and a segment request for a known session asks for one.
    """

    def __init__(
        self,
        max_keys: int = 4096,
        per_key: int = 512,
        ttl_s: float = 3600.0,
        prior_refresh_s: float = 1.0,
    ) -> None:
        self._groups: ExpiringLru[str, dict[str, float]] = ExpiringLru(max_keys, ttl_s)
        self._priors: ExpiringLru[str, Population] = ExpiringLru(max_keys, prior_refresh_s)
        self._per_key = per_key

    async def record(self, key: str, sid: str, estimate_bps: float) -> None:
        self.record_now(key, sid, estimate_bps)

    def record_now(self, key: str, sid: str, estimate_bps: float) -> None:
        """:meth:`record` without awaiting."""
        group = self._groups.get(key)
        if group is None:
            group = {}
        if next(reversed(group), None) != sid:  # else it is the newest already
            group.pop(sid, None)
        group[sid] = estimate_bps
        while len(group) > self._per_key:
            group.pop(next(iter(group)))
        self._groups[key] = group

    async def prior(self, key: str) -> Population | None:
        cached = self._priors.get(key)
        if cached is not None:
            return cached
        group = self._groups.get(key)
        if not group:
            return None
        prior = population_of(key, list(group.values()))
        self._priors[key] = prior
        return prior

    async def samples(self) -> list[float]:
        self._groups.expire()
        return [value for group in self._groups.values() for value in group.values()]
