"""Population samples in Redis: :class:`RedisPopulationStore` (the keys
``population:*``, described in :mod:`cadenza.origin.redis_store`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

from cachetools import TTLCache
from redis.asyncio import Redis

from cadenza.abr.policy import Population
from cadenza.abr.population import population_of
from cadenza.origin.errors import StoreUnavailableError
from cadenza.origin.redis_guard import KEY_PREFIX, batches, guarded, reply_text

log = logging.getLogger("cadenza.origin.redis")


def _estimates_of(values: Iterable[object]) -> list[float]:
    """The throughput estimates among stored values, skipping damaged ones.

    Another program's writes, or a hand edit, must not turn every manifest
    into a 500: what is not a finite, positive number is ignored (logged at
    debug), as the session store ignores a damaged session."""
    found: list[float] = []
    for value in values:
        try:
            number = float(reply_text(value))
        except (StoreUnavailableError, ValueError):
            number = math.nan
        if math.isfinite(number) and number > 0:
            found.append(number)
        else:
            log.debug("ignoring a stored estimate that is not a positive number: %.64r", value)
    return found


class RedisPopulationStore:
    """:class:`~cadenza.origin.sessions.PopulationStore` in Redis: per network key the
    latest estimate of at most ``per_key`` recent sessions, so every replica
    computes the same prior from the same samples.

    Priors are cached here for ``prior_refresh_s`` (they move slowly and a
    segment request asks for one), like the memory store does."""

    def __init__(
        self,
        client: Redis,
        *,
        timeout_s: float,
        max_keys: int = 4096,
        per_key: int = 512,
        ttl_s: float = 3600.0,
        prior_refresh_s: float = 1.0,
        prefix: str = KEY_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._max_keys = max(1, max_keys)
        self._per_key = max(1, per_key)
        self._ttl_s = ttl_s
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._prefix = f"{prefix}population:"
        self._index = f"{prefix}population:keys"
        self._priors: TTLCache[str, Population] = TTLCache(
            maxsize=self._max_keys, ttl=prior_refresh_s
        )
        self._clock = clock

    def _estimates(self, key: str) -> str:
        return f"{self._prefix}{key}:estimates"

    def _recent(self, key: str) -> str:
        return f"{self._prefix}{key}:recent"

    async def record(self, key: str, sid: str, estimate_bps: float) -> None:
        now = self._clock()
        estimates, recent = self._estimates(key), self._recent(key)
        async with (
            guarded("record", self._timeout_s),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.hset(estimates, sid, repr(float(estimate_bps)))
            pipe.zadd(recent, {sid: now})
            pipe.pexpire(estimates, self._ttl_ms)
            pipe.pexpire(recent, self._ttl_ms)
            pipe.zadd(self._index, {key: now})
            pipe.zremrangebyscore(self._index, "-inf", f"({now - self._ttl_s!r}")
            pipe.pexpire(self._index, self._ttl_ms)
            pipe.zcard(recent)
            pipe.zcard(self._index)
            results = await pipe.execute()
        group_size, keys = int(results[-2]), int(results[-1])
        if group_size > self._per_key:
            await self._trim_group(key, group_size)
        if keys > self._max_keys:
            await self._trim_keys(keys)

    async def _trim_group(self, key: str, size: int) -> None:
        recent = self._recent(key)
        async with guarded("trim", self._timeout_s):
            oldest = [
                reply_text(s)
                for s in await self._client.zrange(recent, 0, size - self._per_key - 1)
            ]
            if oldest:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.zrem(recent, *oldest)
                    pipe.hdel(self._estimates(key), *oldest)
                    await pipe.execute()

    async def _trim_keys(self, size: int) -> None:
        async with guarded("trim", self._timeout_s):
            oldest = [
                reply_text(k)
                for k in await self._client.zrange(self._index, 0, size - self._max_keys - 1)
            ]
            if oldest:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._index, *oldest)
                    for key in oldest:
                        pipe.delete(self._estimates(key), self._recent(key))
                    await pipe.execute()

    async def prior(self, key: str) -> Population | None:
        cached = self._priors.get(key)
        if cached is not None:
            return cached
        async with guarded("prior", self._timeout_s):
            values = await self._client.hvals(self._estimates(key))
        if not values:
            return None
        estimates = _estimates_of(values)
        if not estimates:
            return None
        prior = population_of(key, estimates)
        self._priors[key] = prior
        return prior

    async def samples(self) -> list[float]:
        async with (
            guarded("samples", self._timeout_s),
            self._client.pipeline(transaction=False) as pipe,
        ):
            pipe.zremrangebyscore(self._index, "-inf", f"({self._clock() - self._ttl_s!r}")
            pipe.zrange(self._index, 0, -1)
            _, members = await pipe.execute()
        keys = [reply_text(key) for key in members]
        found: list[float] = []
        for batch in batches(keys, 64):
            async with (
                guarded("samples", self._timeout_s),
                self._client.pipeline(transaction=False) as pipe,
            ):
                for key in batch:
                    pipe.hvals(self._estimates(key))
                groups = await pipe.execute()
            found.extend(_estimates_of(value for group in groups for value in group))
        return found
