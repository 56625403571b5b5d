"""The just-in-time metrics (``cadenza serve --sources``), in the style of
:mod:`cadenza.origin.metrics`: base units, every series of a closed label set there
from the start at 0.

The origin imports nothing of the packager: the just-in-time store reports to
:class:`JitMetrics` through the methods of :class:`JitEventSink` (wired in by
``origin.lifecycle.storage_ctx`` when the storage :class:`ReportsJitEvents`), and the
origin itself counts the hot-cache answers of just-in-time objects from their
provenance (:attr:`cadenza.origin.cache.CachedObject.provenance`).

The JIT hit ratio is ``(stored + hot) / all`` of ``cadenza_jit_requests_total``.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram

from cadenza.store.api import Provenance

BUILD_KINDS: Final = ("init", "segment", "manifest")
BUILD_OUTCOMES: Final = ("ok", "failed", "busy", "deferred")
REQUEST_OUTCOMES: Final = ("built", "stored", "hot")
PROMOTION_OUTCOMES: Final = ("started", "done", "failed")
BUILD_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10)


class JitEventSink(Protocol):
    def built(self, kind: str, outcome: str, seconds: float) -> None: ...

    def served(self, how: str) -> None: ...

    def negative_hit(self) -> None: ...

    def promotion(self, outcome: str) -> None: ...


@runtime_checkable
class ReportsJitEvents(Protocol):
    """A storage that builds objects just in time and reports what it does."""

    def attach_events(self, events: JitEventSink) -> None: ...


class JitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.builds = Counter(
            "cadenza_jit_builds",
            "Just-in-time builds by kind (init, segment, manifest: a probe and plan) and "
            "outcome (ok, failed: the source is unusable, busy: refused, queue full, deferred: a "
            "background build refused, no idle thread)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.build_seconds = Histogram(
            "cadenza_jit_build_duration_seconds",
            "Time a just-in-time build took, by kind",
            ["kind"],
            buckets=BUILD_BUCKETS_S,
            registry=registry,
        )
        self.requests = Counter(
            "cadenza_jit_requests",
            "Reads of just-in-time objects by how they were answered: built for the read, "
            "read back from the write-back area (stored), or from the hot cache (hot); "
            "JIT hit ratio = (stored + hot) / all",
            ["outcome"],
            registry=registry,
        )
        self.negative_hits = Counter(
            "cadenza_jit_negative_cache_hits",
            "Requests for a source known to be unusable, answered without probing it again",
            registry=registry,
        )
        self.promotions = Counter(
            "cadenza_jit_promotions",
            "Just-in-time tracks packaged whole into ROOT, by outcome",
            ["outcome"],
            registry=registry,
        )
        for kind in BUILD_KINDS:
            self.build_seconds.labels(kind)
            for outcome in BUILD_OUTCOMES:
                self.builds.labels(kind, outcome)
        for how in REQUEST_OUTCOMES:
            self.requests.labels(how)
        for outcome in PROMOTION_OUTCOMES:
            self.promotions.labels(outcome)

    def built(self, kind: str, outcome: str, seconds: float) -> None:
        self.builds.labels(str(kind), str(outcome)).inc()
        if outcome == "ok":
            self.build_seconds.labels(str(kind)).observe(seconds)

    def served(self, how: str) -> None:
        self.requests.labels(str(how)).inc()

    def negative_hit(self) -> None:
        self.negative_hits.inc()

    def promotion(self, outcome: str) -> None:
        self.promotions.labels(str(outcome)).inc()

    def cache_answered(self, provenance: Provenance, how: str) -> None:
        """A hot-cache answer (``hit``, ``collapsed``...) of an object; counted when the
        object was built just in time (a miss is counted by the store itself)."""
        if provenance is not Provenance.STORED and how != "miss":
            self.requests.labels("hot").inc()
