"""Sessions and population priors in Redis, shared by every origin replica.

``CADENZA_REDIS_URL`` switches :class:`~cadenza.origin.sessions.SessionStore` and
:class:`~cadenza.origin.sessions.PopulationStore` to the stores here, so a beacon sent
to one replica shows in ``GET /v1/sessions/{sid}`` on another and priors agree
everywhere.  Keys (all under ``cadenza:``):

- ``session:{sid}``: one session, compact JSON of its fields, expiring
  ``session_ttl_s`` after its last update (``PX``);
- ``sessions``: a sorted set of sids scored by last-seen time, trimmed by age
  and to ``sessions_max`` (the oldest go first, their records with them), so
  ``active()`` and ``count()`` are bounded;
- ``population:{network key}:estimates`` (hash sid -> latest estimate, bit/s)
  and ``population:{network key}:recent`` (sorted set sid -> time): the latest
  estimate of at most ``per_key`` recent sessions per key;
- ``population:keys``: the network keys, scored by their last sample;
- ``transitions:{track}``: next-track counts (:mod:`~cadenza.origin.redis_transitions`).

This module holds the client (:class:`RedisBackend`); the stores are in
:mod:`~cadenza.origin.redis_sessions` and :mod:`~cadenza.origin.redis_population`.
These three and :mod:`~cadenza.origin.redis_guard` are the Redis boundary: every
redis-py error (and a timeout) leaves them as
:class:`~cadenza.origin.errors.StoreUnavailableError`; nothing else in ``origin``
imports redis.  :mod:`~cadenza.origin.store_fallback` keeps the origin serving
from local memory while Redis is unreachable.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cadenza.origin.redis_guard import KEY_PREFIX, guarded
from cadenza.origin.redis_population import RedisPopulationStore
from cadenza.origin.redis_sessions import RedisSessionStore
from cadenza.origin.redis_transitions import RedisTransitionStore


class RedisBackend:
    """One redis-py client (its connection pool) and the stores built on it.

    Every socket operation is bounded by ``timeout_s`` and redis-py's own
    retries are off: a dead Redis fails an operation at once and the fallback
    stores decide when to try again."""

    def __init__(self, url: str, *, timeout_s: float, prefix: str = KEY_PREFIX) -> None:
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def sessions(self, *, max_sessions: int, ttl_s: float) -> RedisSessionStore:
        return RedisSessionStore(
            self.client,
            max_sessions=max_sessions,
            ttl_s=ttl_s,
            timeout_s=self.timeout_s,
            prefix=self.prefix,
        )

    def population(self, **options: Any) -> RedisPopulationStore:
        return RedisPopulationStore(
            self.client, timeout_s=self.timeout_s, prefix=self.prefix, **options
        )

    def transitions(self, **options: Any) -> RedisTransitionStore:
        """Next-track transitions (:mod:`~cadenza.origin.redis_transitions`)."""
        return RedisTransitionStore(
            self.client, timeout_s=self.timeout_s, prefix=self.prefix, **options
        )

    async def ping(self) -> None:
        async with guarded("ping", self.timeout_s):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
