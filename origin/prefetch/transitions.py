"""Next-track transitions learned from sessions: how often a session that played
track A went on to track B.  Kept here in memory (bounded: least recently
updated A first out, and at most ``per_track`` successors per A, the least
counted dropped), or in Redis (:mod:`cadenza.origin.redis_transitions`), shared
by every replica; :class:`FallbackTransitions` keeps learning and predicting
from memory while Redis does not answer."""

from __future__ import annotations

import logging
from typing import Final, Protocol

from cachetools import LRUCache

from cadenza.origin.errors import StoreUnavailableError

log = logging.getLogger("cadenza.origin.prefetch")

TRACKS_KEPT: Final = 100_000
SUCCESSORS_KEPT: Final = 16


class TransitionStore(Protocol):
    async def record(self, before: str, after: str) -> None: ...

    async def successors(self, before: str) -> list[tuple[str, int]]:
        """``before``'s kept successors and their counts, most counted first."""
        ...


class MemoryTransitionStore:
    """Transitions in this process."""

    def __init__(self, max_tracks: int = TRACKS_KEPT, per_track: int = SUCCESSORS_KEPT) -> None:
        self._counts: LRUCache[str, dict[str, int]] = LRUCache(maxsize=max(1, max_tracks))
        self._per_track = max(1, per_track)

    async def record(self, before: str, after: str) -> None:
        self.record_now(before, after)

    def record_now(self, before: str, after: str) -> None:
        counts = self._counts.get(before)
        if counts is None:
            counts = {}
        counts[after] = counts.get(after, 0) + 1
        while len(counts) > self._per_track:
            # The least counted goes (the oldest of equals: dicts keep insertion order),
            # never the one just counted.
            least = min((t for t in counts if t != after), key=lambda t: counts[t])
            del counts[least]
        self._counts[before] = counts  # also marks it most recently used

    async def successors(self, before: str) -> list[tuple[str, int]]:
        counts = self._counts.get(before) or {}
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


class FallbackTransitions:
    """``primary`` (Redis) while it answers, else ``local``; every transition is
    also counted locally, so predictions go on from what this process saw."""

    def __init__(self, primary: TransitionStore, local: MemoryTransitionStore) -> None:
        self.primary = primary
        self.local = local
        self.failures = 0

    async def record(self, before: str, after: str) -> None:
        self.local.record_now(before, after)
        try:
            await self.primary.record(before, after)
        except StoreUnavailableError as exc:
            self._failed(exc)

    async def successors(self, before: str) -> list[tuple[str, int]]:
        try:
            return await self.primary.successors(before)
        except StoreUnavailableError as exc:
            self._failed(exc)
            return await self.local.successors(before)

    def _failed(self, exc: StoreUnavailableError) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 1000 == 0:
            log.warning("transitions from local memory (%d failures): %s", self.failures, exc)
