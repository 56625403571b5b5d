"""Which warmed objects a player then asked for: a bounded ledger of the keys
prefetch loaded into the hot cache.  An entry settles once: used (the first
request for it was a hot-cache hit), or wasted (its first request found it
gone from the cache, or it aged out of the ledger, or was pushed out of it,
unasked)."""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final

LEDGER_KEYS: Final = 4096
# A track prepared at its predecessor's half may be started minutes later.
LEDGER_TTL_S: Final = 900.0


class Settled(enum.Enum):
    USED = "used"
    WASTED = "wasted"


class WarmLedger:
    def __init__(self, max_keys: int = LEDGER_KEYS, ttl_s: float = LEDGER_TTL_S) -> None:
        self._warmed: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max(1, max_keys)
        self._ttl_s = ttl_s

    def __len__(self) -> int:
        return len(self._warmed)

    def __contains__(self, key: str) -> bool:
        return key in self._warmed

    def add(self, key: str, now_s: float) -> int:
        """``key`` was just warmed; returns how many entries this wasted (aged or
        pushed out)."""
        wasted = self.expire(now_s)
        self._warmed.pop(key, None)
        self._warmed[key] = now_s
        while len(self._warmed) > self._max_keys:
            self._warmed.popitem(last=False)
            wasted += 1
        return wasted

    def settle(self, key: str, hit: bool, now_s: float) -> Settled | None:
        """A player asked for ``key`` (``hit``: from the hot cache): how its warm
        settled, or None when it was not warmed (or settled already)."""
        warmed_s = self._warmed.pop(key, None)
        if warmed_s is None:
            return None
        if not hit or now_s - warmed_s > self._ttl_s:
            return Settled.WASTED
        return Settled.USED

    def expire(self, now_s: float) -> int:
        """Drop the entries older than the TTL; returns how many (all wasted)."""
        dropped = 0
        while self._warmed:
            key, warmed_s = next(iter(self._warmed.items()))
            if now_s - warmed_s <= self._ttl_s:
                break
            del self._warmed[key]
            dropped += 1
        return dropped
