"""Next-track transitions in Redis, shared by every replica:
:class:`RedisTransitionStore` (a :class:`~cadenza.origin.prefetch.transitions.TransitionStore`).

Keys (under ``cadenza:``): ``transitions:{track}``, a sorted set of the tracks
sessions went on to after ``track``, scored by how often.  Each count is a
``ZINCRBY``; the set is then trimmed to its ``per_track`` most counted members
(``ZREMRANGEBYRANK``) and expires ``ttl_s`` after its last count (``PEXPIRE``),
all in one round trip, so neither the members nor the keys grow without bound.
"""

from __future__ import annotations

import logging
import math
from typing import Final, cast

from redis.asyncio import Redis

from cadenza.origin.redis_guard import KEY_PREFIX, guarded, reply_text

log = logging.getLogger("cadenza.origin.redis")

# A track nobody moved on from for this long forgets its successors.
TRANSITIONS_TTL_S: Final = 30 * 24 * 3600.0


class RedisTransitionStore:
    def __init__(
        self,
        client: Redis,
        *,
        timeout_s: float,
        per_track: int = 16,
        ttl_s: float = TRANSITIONS_TTL_S,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._per_track = max(1, per_track)
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._prefix = f"{prefix}transitions:"

    def key(self, track: str) -> str:
        return f"{self._prefix}{track}"

    async def record(self, before: str, after: str) -> None:
        key = self.key(before)
        async with (
            guarded("record transition", self._timeout_s),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.zincrby(key, 1, after)
            pipe.zremrangebyrank(key, 0, -(self._per_track + 1))
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def successors(self, before: str) -> list[tuple[str, int]]:
        async with guarded("transitions", self._timeout_s):
            members = await self._client.zrevrange(
                self.key(before), 0, self._per_track - 1, withscores=True
            )
        found: list[tuple[str, int]] = []
        for member, score in cast(list[tuple[object, object]], members):
            try:
                count = int(float(cast(float, score)))
            except (TypeError, ValueError):
                log.debug("ignoring a transition count that is not a number: %.64r", score)
                continue
            if count > 0:
                found.append((reply_text(member), count))
        return found
