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
- ``population:keys``: the network keys, scored by their last sample.

This module is the Redis boundary: every redis-py error (and a timeout) leaves
it as :class:`~cadenza.origin.errors.StoreUnavailableError`; nothing else in
``origin`` imports redis.  :class:`FallbackSessionStore` and
:class:`FallbackPopulationStore` keep the origin serving from local memory
while Redis is unreachable: one warning per outage, every operation served
locally counted in ``cadenza_redis_fallbacks_total``, ``cadenza_redis_up``
at 0, and Redis tried again after ``redis_retry_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

from cachetools import TTLCache
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cadenza.abr.estimator import DualEwma, Ewma
from cadenza.abr.policy import Population
from cadenza.origin.errors import StoreUnavailableError
from cadenza.origin.metrics import Metrics
from cadenza.origin.sessions import PopulationStore, SessionState, SessionStore, population_of

log = logging.getLogger("cadenza.origin.redis")

KEY_PREFIX: Final = "cadenza:"
# MGET / HVALS batches: one reply stays small however many sessions there are.
BATCH: Final = 1000
BACKEND: Final = "redis"

T = TypeVar("T")

_SESSION_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(SessionState))


# -- session records ---------------------------------------------------------


def encode_session(state: SessionState) -> bytes:
    """Every field of the dataclass (the estimator's EWMAs too), as compact JSON.

    Not :meth:`SessionState.to_dict`: that is the public report, rounded and
    with derived values; this must restore the state exactly."""
    return json.dumps(dataclasses.asdict(state), separators=(",", ":")).encode()


def decode_session(raw: bytes | str) -> SessionState:
    """The inverse of :func:`encode_session`; ``ValueError`` for a record that is not one.

    Unknown fields are ignored and missing optional ones take their defaults,
    so replicas of neighbouring versions can share a Redis."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fields = {name: value for name, value in data.items() if name in _SESSION_FIELDS}
        estimator = fields.pop("estimator", None)
        if estimator is not None:
            fields["estimator"] = DualEwma(
                Ewma(**estimator["fast"]), Ewma(**estimator["slow"]), estimator["default_bps"]
            )
        state = SessionState(**fields)
    except (TypeError, KeyError, ValueError, RecursionError) as exc:
        raise ValueError(f"not a session record: {exc}") from None
    if not isinstance(state.sid, str) or not isinstance(state.last_seen_s, int | float):
        raise ValueError("not a session record: bad sid or last_seen_s")
    return state


# -- the Redis connection -------------------------------------------------------


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

    async def ping(self) -> None:
        async with guarded("ping", self.timeout_s):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


@asynccontextmanager
async def guarded(what: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound one round trip by ``timeout_s`` and map redis-py's errors to ours."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (RedisError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise StoreUnavailableError(f"redis {what}: {detail}", BACKEND) from exc


def _text(value: object) -> str:
    """A member of a set as text (redis-py's reply types cover scored ranges too)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise StoreUnavailableError(f"redis: unexpected reply {type(value).__name__}", BACKEND)


def _estimates_of(values: Iterable[object]) -> list[float]:
    """The throughput estimates among stored values, skipping damaged ones.

    Another program's writes, or a hand edit, must not turn every manifest
    into a 500: what is not a finite, positive number is ignored (logged at
    debug), as :meth:`RedisSessionStore._decode` ignores a damaged session."""
    found: list[float] = []
    for value in values:
        try:
            number = float(_text(value))
        except (StoreUnavailableError, ValueError):
            number = math.nan
        if math.isfinite(number) and number > 0:
            found.append(number)
        else:
            log.debug("ignoring a stored estimate that is not a positive number: %.64r", value)
    return found


def _batches(items: Sequence[str], size: int = BATCH) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class RedisSessionStore:
    """:class:`~cadenza.origin.sessions.SessionStore` in Redis: one key per session plus
    an index of sids by last-seen time, both bounded in age and number."""

    def __init__(
        self,
        client: Redis,
        *,
        max_sessions: int,
        ttl_s: float,
        timeout_s: float,
        prefix: str = KEY_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._max = max(1, max_sessions)
        self._ttl_s = ttl_s
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._timeout_s = timeout_s
        self._index = f"{prefix}sessions"
        self._key_prefix = f"{prefix}session:"
        # Sessions this replica trimmed for room (cadenza_sessions_evicted_total).
        self.evictions = 0
        self._clock = clock

    def key(self, sid: str) -> str:
        return self._key_prefix + sid

    def _cutoff(self) -> str:
        return f"({self._clock() - self._ttl_s!r}"  # exclusive: older than the TTL

    async def get(self, sid: str) -> SessionState | None:
        async with guarded("get", self._timeout_s):
            raw = await self._client.get(self.key(sid))
        return self._decode(sid, raw)

    async def put(self, state: SessionState) -> None:
        payload = encode_session(state)
        async with (
            guarded("put", self._timeout_s),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.set(self.key(state.sid), payload, px=self._ttl_ms)
            pipe.zadd(self._index, {state.sid: state.last_seen_s})
            pipe.zremrangebyscore(self._index, "-inf", self._cutoff())
            pipe.pexpire(self._index, self._ttl_ms)
            pipe.zcard(self._index)
            results = await pipe.execute()
        size = int(results[-1])
        if size > self._max:
            await self._trim(size)

    async def _trim(self, size: int) -> None:
        """Forget the least recently seen sessions beyond ``max_sessions``."""
        async with guarded("trim", self._timeout_s):
            overflow = [
                _text(sid)
                for sid in await self._client.zrange(self._index, 0, size - self._max - 1)
            ]
            if overflow:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._index, *overflow)
                    pipe.delete(*(self.key(sid) for sid in overflow))
                    removed, _ = await pipe.execute()
                # ZREM's count: a sid another replica trimmed first is not counted twice.
                self.evictions += int(removed)

    async def active(self) -> list[SessionState]:
        """The sessions seen within the TTL, newest first, at most ``max_sessions``."""
        async with (
            guarded("active", self._timeout_s),
            self._client.pipeline(transaction=False) as pipe,
        ):
            pipe.zremrangebyscore(self._index, "-inf", self._cutoff())
            pipe.zrevrange(self._index, 0, self._max - 1)
            _, members = await pipe.execute()
        sids = [_text(sid) for sid in members]
        states: list[SessionState] = []
        for batch in _batches(sids):
            async with guarded("active", self._timeout_s):
                raws = await self._client.mget([self.key(sid) for sid in batch])
            states.extend(
                state
                for sid, raw in zip(batch, raws, strict=True)
                if (state := self._decode(sid, raw)) is not None
            )
        return states

    async def count(self) -> int:
        async with (
            guarded("count", self._timeout_s),
            self._client.pipeline(transaction=False) as pipe,
        ):
            pipe.zremrangebyscore(self._index, "-inf", self._cutoff())
            pipe.zcard(self._index)
            _, size = await pipe.execute()
        return min(int(size), self._max)

    @staticmethod
    def _decode(sid: str, raw: bytes | str | None) -> SessionState | None:
        if raw is None:
            return None
        try:
            return decode_session(raw)
        except ValueError as exc:  # another program's key, or a damaged one: not a session
            log.debug("ignoring the record of session %r: %s", sid[:64], exc)
            return None


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
                _text(s) for s in await self._client.zrange(recent, 0, size - self._per_key - 1)
            ]
            if oldest:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.zrem(recent, *oldest)
                    pipe.hdel(self._estimates(key), *oldest)
                    await pipe.execute()

    async def _trim_keys(self, size: int) -> None:
        async with guarded("trim", self._timeout_s):
            oldest = [
                _text(k)
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
        keys = [_text(key) for key in members]
        found: list[float] = []
        for batch in _batches(keys, 64):
            async with (
                guarded("samples", self._timeout_s),
                self._client.pipeline(transaction=False) as pipe,
            ):
                for key in batch:
                    pipe.hvals(self._estimates(key))
                groups = await pipe.execute()
            found.extend(_estimates_of(value for group in groups for value in group))
        return found


# -- falling back to local state --------------------------------------------------


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
        self._down_since = -math.inf
        self._retry_at = -math.inf
        if metrics is not None:
            metrics.redis_up.set(1)

    def attempt(self) -> float | None:
        """When Redis may be used now: the attempt's start time; else None.

        While down, the first caller after the back-off claims the retry (the
        next one is pushed ``retry_s`` on), so only one request probes."""
        now = self._clock()
        if self.up:
            return now
        if now < self._retry_at:
            return None
        self._retry_at = now + self.retry_s
        return now

    def failed(self, exc: Exception) -> None:
        now = self._clock()
        self._retry_at = now + self.retry_s
        if not self.up:
            return
        self.up = False
        self.outages += 1
        self._down_since = now
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
        if self.up or started < self._down_since:
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
