"""Sessions in Redis: the record codec and :class:`RedisSessionStore` (the keys
``session:{sid}`` and ``sessions``, described in :mod:`cadenza.origin.redis_store`)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from redis.asyncio import Redis

from cadenza.abr.controller import ControllerState, Reason
from cadenza.abr.delivery import Delivery
from cadenza.abr.estimator import DualEwma, Ewma
from cadenza.abr.session import DecisionRecord, SessionState
from cadenza.origin.redis_guard import KEY_PREFIX, batches, guarded, reply_text

log = logging.getLogger("cadenza.origin.redis")

_SESSION_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(SessionState))
_CONTROLLER_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(ControllerState))
_REASONS: Final = frozenset(reason.value for reason in Reason)
_DELIVERIES: Final = frozenset(delivery.value for delivery in Delivery)


# -- session records ---------------------------------------------------------


def encode_session(state: SessionState) -> bytes:
    """Every field of the dataclass (the estimator's EWMAs too), as compact JSON.

    Not :meth:`SessionState.to_dict`: that is the public report, rounded and
    with derived values; this must restore the state exactly.  The
    controller's packed window (bytes) is written in base64."""
    data = dataclasses.asdict(state)
    controller = data["controller"]
    if controller is not None:
        controller["window"] = base64.b64encode(controller["window"]).decode("ascii")
    return json.dumps(data, separators=(",", ":")).encode()


def _decode_controller(data: dict[str, object]) -> ControllerState:
    fields = {name: value for name, value in data.items() if name in _CONTROLLER_FIELDS}
    window = fields.pop("window", "")
    if not isinstance(window, str):
        raise ValueError("controller window is not base64 text")
    return ControllerState(**fields, window=base64.b64decode(window, validate=True))  # type: ignore[arg-type]


def _decode_delivery(value: object) -> Delivery | None:
    """A decision's delivery; None when the record has none (an earlier replica's)
    or one this version does not know (a newer replica's)."""
    return Delivery(value) if isinstance(value, str) and value in _DELIVERIES else None


def _decode_decisions(items: list[dict[str, object]]) -> tuple[DecisionRecord, ...]:
    """The decisions whose reason this version knows (a newer replica's are skipped)."""
    return tuple(
        DecisionRecord(
            int(str(item["segment"])),
            str(item["rung"]),
            int(str(item["bitrate_bps"])),
            Reason(str(item["reason"])),
            _decode_delivery(item.get("delivery")),
        )
        for item in items
        if item.get("reason") in _REASONS
    )


def decode_session(raw: bytes | str) -> SessionState:
    """The inverse of :func:`encode_session`; ``ValueError`` for a record that is not one.

    Unknown fields are ignored and missing optional ones take their defaults,
    so replicas of neighbouring versions can share a Redis (a record written
    before origin-decided ABR has no controller and no decisions)."""
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
        controller = fields.pop("controller", None)
        if controller is not None:
            fields["controller"] = _decode_controller(controller)
        decisions = fields.pop("decisions", None)
        if decisions is not None:
            fields["decisions"] = _decode_decisions(decisions)
        state = SessionState(**fields)
    except (TypeError, KeyError, ValueError, AttributeError, RecursionError) as exc:
        raise ValueError(f"not a session record: {exc}") from None
    if not isinstance(state.sid, str) or not isinstance(state.last_seen_s, int | float):
        raise ValueError("not a session record: bad sid or last_seen_s")
    return state


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
                reply_text(sid)
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
        sids = [reply_text(sid) for sid in members]
        states: list[SessionState] = []
        for batch in batches(sids):
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
