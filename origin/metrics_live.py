"""The live metrics (``origin.live``), in the style of :mod:`cadenza.origin.metrics`:
base units, every series of a closed label set there from the start at 0.

A blocking playlist reload (RFC 8216bis 6.2.5.2) is counted once, when it ends:
``answered`` (the playlist had what it asked for, at once or after waiting),
``timed_out`` (``503`` after three target durations) or ``bad`` (``400``: malformed
delivery directives, or too far ahead)."""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge


class BlockingOutcome(enum.StrEnum):
    ANSWERED = "answered"
    TIMED_OUT = "timed_out"
    BAD = "bad"


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocked_requests = Gauge(
            "cadenza_live_blocked_requests",
            "Requests waiting now for a live track to change (blocking playlist reloads, "
            "hinted parts, open segments)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.blocking_requests = Counter(
            "cadenza_live_blocking_requests",
            "Blocking playlist reloads (_HLS_msn) by outcome: answered, timed_out (503), bad (400)",
            ["outcome"],
            registry=registry,
        )
        self.tracks_watched = Gauge(
            "cadenza_live_tracks_watched",
            "Live tracks whose state this origin is watching",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.open_segment_streams = Counter(
            "cadenza_live_open_segment_streams",
            "Open live segments streamed with chunked transfer coding, by outcome: complete, "
            "aborted (the segment did not complete in time or left the window)",
            ["outcome"],
            registry=registry,
        )
        for outcome in BlockingOutcome:
            self.blocking_requests.labels(outcome.value)
        for streamed in ("complete", "aborted"):
            self.open_segment_streams.labels(streamed)

    def blocking_done(self, outcome: BlockingOutcome) -> None:
        self.blocking_requests.labels(outcome.value).inc()
