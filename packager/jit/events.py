"""What the just-in-time store reports as it works, for the origin's metrics: the
origin wires an object with these methods in (:meth:`JitStore.attach_events`), so the
store never imports the origin and the origin never imports the packager."""

from __future__ import annotations

import enum
from typing import Protocol


class BuildKind(enum.StrEnum):
    INIT = "init"
    SEGMENT = "segment"
    MANIFEST = "manifest"  # a probe and plan: the manifests and presentation.json


class BuildOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # the source could not be built from
    BUSY = "busy"  # refused: the build queue was full
    # A background build (prefetch, read-ahead) not started: no thread was idle.
    DEFERRED = "deferred"


class Served(enum.StrEnum):
    """How a JIT object reached storage's caller: built for this read, or read back
    from the write-back area (a hot-cache hit never reaches the store: the origin
    counts those itself from the object's provenance)."""

    BUILT = "built"
    STORED = "stored"


class PromotionOutcome(enum.StrEnum):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


class JitEvents(Protocol):
    def built(self, kind: BuildKind, outcome: BuildOutcome, seconds: float) -> None: ...

    def served(self, how: Served) -> None: ...

    def negative_hit(self) -> None: ...

    def promotion(self, outcome: PromotionOutcome) -> None: ...


class CountingEvents:
    """Counts every event in plain dicts (the default, and what tests read)."""

    def __init__(self) -> None:
        self.builds: dict[tuple[str, str], int] = {}
        self.served_by: dict[str, int] = {}
        self.negative_hits = 0
        self.promotions: dict[str, int] = {}
        self._forward: JitEvents | None = None

    def forward_to(self, events: JitEvents) -> None:
        """Also pass every event on to ``events`` (the origin's metrics)."""
        self._forward = events

    def built(self, kind: BuildKind, outcome: BuildOutcome, seconds: float) -> None:
        key = (kind.value, outcome.value)
        self.builds[key] = self.builds.get(key, 0) + 1
        if self._forward is not None:
            self._forward.built(kind, outcome, seconds)

    def served(self, how: Served) -> None:
        self.served_by[how.value] = self.served_by.get(how.value, 0) + 1
        if self._forward is not None:
            self._forward.served(how)

    def negative_hit(self) -> None:
        self.negative_hits += 1
        if self._forward is not None:
            self._forward.negative_hit()

    def promotion(self, outcome: PromotionOutcome) -> None:
        self.promotions[outcome.value] = self.promotions.get(outcome.value, 0) + 1
        if self._forward is not None:
            self._forward.promotion(outcome)
