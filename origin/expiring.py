"""A bounded map whose entries expire: what the memory session and population
stores keep their values in (:mod:`cadenza.origin.sessions`).

The rules are those of ``cachetools.TTLCache``, which the stores used before:
an entry is forgotten ``ttl_s`` after it was last set (a set refreshes it, a
read does not); when full, the least recently used entry (read or set) makes
room, and is counted; iteration is in the order the keys were first set, and
uses each entry it reads.  It
is written out here because a decided segment reads and writes a session and
its network's population on every request, and ``TTLCache`` spends
microseconds per call on its timer context and linked list."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringLru(Generic[K, V]):
    """At most ``maxsize`` entries, each forgotten ``ttl_s`` after its last set;
    the least recently used evicted first when full (:attr:`evictions` counts
    those, not the expired).  ``timer``: seconds, never going back."""

    def __init__(
        self, maxsize: int, ttl_s: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self.evictions = 0
        self._timer = timer
        self._values: dict[K, V] = {}  # in the order keys were first set
        self._used: OrderedDict[K, float] = OrderedDict()  # least recently used first: expiry
        self._set: OrderedDict[K, float] = OrderedDict()  # least recently set first: expiry
        # No entry expires before this (the first one of _set when it was read).
        self._next_expiry_s = math.inf

    def get(self, key: K) -> V | None:
        """The value of ``key`` (made the most recently used), None when absent or expired."""
        expires_s = self._used.get(key)
        if expires_s is None or not self._timer() < expires_s:
            return None
        self._used.move_to_end(key)
        return self._values[key]

    def __setitem__(self, key: K, value: V) -> None:
        now_s = self._timer()
        if now_s >= self._next_expiry_s:
            self.expire(now_s)
        expires_s = now_s + self.ttl_s
        values = self._values
        if key in values:
            self._used.move_to_end(key)
            self._set.move_to_end(key)
        else:
            while len(values) >= self.maxsize:
                self._drop(next(iter(self._used)))
                self.evictions += 1
        values[key] = value
        self._used[key] = expires_s
        self._set[key] = expires_s
        if expires_s < self._next_expiry_s:  # it was empty: entries are set in time order
            self._next_expiry_s = expires_s

    def expire(self, now_s: float | None = None) -> None:
        """Forget the entries whose time is up."""
        if now_s is None:
            now_s = self._timer()
        by_set = self._set
        while by_set:
            key, expires_s = next(iter(by_set.items()))
            if now_s < expires_s:
                self._next_expiry_s = expires_s
                return
            self._drop(key)
        self._next_expiry_s = math.inf

    def _drop(self, key: K) -> None:
        del self._values[key]
        del self._used[key]
        del self._set[key]

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> Iterator[V]:
        """The values not expired, in the order their keys were first set; each
        one read is used (as ``TTLCache.values()`` reads each)."""
        now_s = self._timer()
        used = self._used
        found = []
        for key, value in self._values.items():
            if now_s < used[key]:
                used.move_to_end(key)
                found.append(value)
        return iter(found)
