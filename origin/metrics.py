"""Prometheus metrics, on a registry owned by the app (no module globals).

With ``--workers N`` every process writes to ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` aggregates all of them, so counts add up across workers."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    response_bytes: Counter
    latency: Histogram
    cache_lookups: Counter
    cache_bytes: Gauge
    storage_errors: Counter

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def create_metrics() -> Metrics:
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
        requests=Counter(
            "cadenza_requests",
            "HTTP requests by route class, status and cache result",
            ["route", "status", "cache"],
            registry=registry,
        ),
        response_bytes=Counter(
            "cadenza_response_bytes", "Response body bytes sent", ["route"], registry=registry
        ),
        latency=Histogram(
            "cadenza_request_duration_seconds",
            "Time to produce a response",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        cache_lookups=Counter(
            "cadenza_hot_cache_lookups",
            "Hot-cache lookups by result (hit ratio = hit / all)",
            ["result"],
            registry=registry,
        ),
        cache_bytes=Gauge(
            "cadenza_hot_cache_bytes",
            "Bytes held in the hot cache",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        storage_errors=Counter(
            "cadenza_storage_errors",
            "Storage failures by backend and kind",
            ["backend", "kind"],
            registry=registry,
        ),
    )
