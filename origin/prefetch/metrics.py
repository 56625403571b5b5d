"""Prefetch's metrics, on the origin's registry (see :mod:`cadenza.origin.metrics`
for the conventions): objects warmed by reason, used and wasted, warms dropped
by reason, and the time to first byte of media answers by where the object
came from."""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from cadenza.origin.metrics import LATENCY_BUCKETS_S
from cadenza.origin.prefetch.plan import WarmReason


class DropReason(enum.StrEnum):
    """Why an object was not warmed (``cadenza_prefetch_dropped_total{reason}``)."""

    BAD_NOR = "bad_nor"  # a CMCD nor outside the track, malformed, or not servable
    PENDING_FULL = "pending_full"  # the bounded queue of pending warms overflowed
    SESSION_BUDGET = "session_budget"  # over prefetch_session_max for the session
    BUSY = "busy"  # storage said its build pool is busy
    FAILED = "failed"  # the load failed (not found, storage down, too large)
    EVENTS_FULL = "events_full"  # the queue of requests to plan from overflowed


class FirstByteSource(enum.StrEnum):
    """``cadenza_first_byte_seconds{source}``."""

    JIT = "jit"  # storage built the object for this request
    PREFETCHED = "prefetched"  # a hit on an object prefetch warmed, first use
    PLAIN = "plain"  # anything else


@dataclass(frozen=True, slots=True)
class PrefetchMetrics:
    issued: Counter
    used: Counter
    wasted: Counter
    dropped: Counter
    first_byte: Histogram

    def drop(self, reason: DropReason, count: int = 1) -> None:
        self.dropped.labels(reason.value).inc(count)


_made: weakref.WeakKeyDictionary[CollectorRegistry, PrefetchMetrics] = weakref.WeakKeyDictionary()


def prefetch_metrics(registry: CollectorRegistry) -> PrefetchMetrics:
    """The prefetch metrics on ``registry`` (made once per registry)."""
    made = _made.get(registry)
    if made is not None:
        return made
    made = PrefetchMetrics(
        issued=Counter(
            "cadenza_prefetch_issued",
            "Objects prefetch loaded into the hot cache, by why (queue, learned, nor)",
            ["reason"],
            registry=registry,
        ),
        used=Counter(
            "cadenza_prefetch_used",
            "Prefetched objects whose first request was a hot-cache hit",
            registry=registry,
        ),
        wasted=Counter(
            "cadenza_prefetch_wasted",
            "Prefetched objects evicted or expired before any request for them",
            registry=registry,
        ),
        dropped=Counter(
            "cadenza_prefetch_dropped",
            "Objects prefetch did not warm, by reason",
            ["reason"],
            registry=registry,
        ),
        first_byte=Histogram(
            "cadenza_first_byte_seconds",
            "From a media request's head to its answer's head, by where the object came "
            "from (jit: built for this request; prefetched; plain)",
            ["source"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
    )
    for reason in WarmReason:
        made.issued.labels(reason.value)
    for dropped in DropReason:
        made.dropped.labels(dropped.value)
    for source in FirstByteSource:
        made.first_byte.labels(source.value)
    _made[registry] = made
    return made
