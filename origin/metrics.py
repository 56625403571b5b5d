"""Prometheus metrics, on a registry owned by the app (no module globals).

With ``--workers N`` every process writes to ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` aggregates all of them, so counts add up across workers.

Units are the base units Prometheus' naming conventions ask for (``_seconds``,
``_bytes``, ``_bits_per_second``).  Every labelled counter whose labels form a
closed set (enums, or the constants below) has all its series from the start, at
0, so that ``rate()`` and ``increase()`` see the first event and alerts on them
need no ``or vector(0)``.  What ``/metrics`` adds (build info, ``process_*``) and
leaves out (``*_created``, Redis health without Redis) is
:mod:`cadenza.origin.metrics_export`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from cadenza.origin.metrics_batch import ObservationBatch
from cadenza.origin.metrics_export import BuildInfo, Exported, WorkerProcesses
from cadenza.origin.metrics_jit import JitMetrics
from cadenza.origin.metrics_labels import preset_closed_sets
from cadenza.origin.metrics_live import LiveMetrics

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
THROUGHPUT_BUCKETS_BPS = tuple(
    kbps * 1000 for kbps in (32, 64, 96, 128, 192, 256, 384, 512, 1000, 2000, 5000, 10000, 50000)
)
BITRATE_BUCKETS_BPS = tuple(
    kbps * 1000 for kbps in (32, 64, 96, 128, 160, 192, 256, 320, 512, 1000, 2000)
)
QOE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

# The metric families /metrics leaves out when no Redis is configured.
REDIS_ONLY: Final = frozenset({"cadenza_redis_up"})


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    response_bytes: Counter
    latency: Histogram
    cache_lookups: Counter
    cache_bytes: Gauge
    storage_errors: Counter
    sessions_active: Gauge
    bitrate_switches: Counter
    buffer_starvations: Counter
    session_throughput_bps: Histogram
    session_bitrate_bps: Histogram
    session_qoe: Histogram
    beacons: Counter
    cmcd_malformed: Counter
    steered_manifests: Counter
    sessions_evicted: Counter
    ip_rate_limited: Counter
    connections_refused: Counter
    access_denied: Counter
    licences_issued: Counter
    licences_refused: Counter
    redis_up: Gauge
    redis_fallbacks: Counter
    pathway_up: Gauge
    steering_responses: Counter
    steering_malformed: Counter
    fast_path_handovers: Counter
    abr_decisions: Counter
    abr_switches: Counter
    abr_deliveries: Counter
    jit: JitMetrics  # cadenza serve --sources (origin.metrics_jit)
    live: LiveMetrics  # live tracks (origin.live, origin.metrics_live)
    # Families /metrics leaves out (metrics_export.Exported).
    hidden: frozenset[str] = frozenset()
    # Labelled children, looked up once: ``labels()`` takes a lock and builds a
    # tuple on every call, a measurable share of a hot-cache hit.
    _children: dict[tuple[str, ...], tuple[Any, Any, Any]] = field(default_factory=dict)
    _labelled: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)
    # Histogram values, applied once per event-loop turn and before a scrape.
    batch: ObservationBatch = field(default_factory=ObservationBatch)

    def cache_lookup(self, how: str) -> None:
        self._child(self.cache_lookups, (how,)).inc()

    def steered(self, source: str) -> None:
        self._child(self.steered_manifests, (source,)).inc()

    def beacon(self, kind: str, result: str) -> None:
        self._child(self.beacons, (kind, result)).inc()

    def decided(self, reason: str, switched: bool) -> None:
        """One segment the origin decided (``?abr=origin``)."""
        self._child(self.abr_decisions, (reason,)).inc()
        if switched:
            self.batch.counted(self.abr_switches).inc()

    def delivered(self, delivery: str) -> None:
        """How a decided segment was answered: ``redirect`` or ``direct`` (counted once
        the answer is settled, so a direct choice that falls back to a redirect counts
        as the redirect it is)."""
        self._child(self.abr_deliveries, (delivery,)).inc()

    def _child(self, metric: Counter, values: tuple[str, ...]) -> Any:
        """``metric.labels(*values)``, once per value set (closed sets only),
        its increments batched per loop turn (:mod:`cadenza.origin.metrics_batch`)."""
        key = (id(metric), values)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = self.batch.counted(metric.labels(*values))
        return child

    def _request_children(self, route: str, status: str, cache: str) -> tuple[Any, Any, Any]:
        key = (route, status, cache)
        children = self._children.get(key)
        if children is None:
            children = (
                self.batch.counted(self.requests.labels(route, status, cache)),
                self.batch.counted(self.response_bytes.labels(route)),
                self.batch.of(self.latency.labels(route)),
            )
            self._children[key] = children
        return children

    def request_done(
        self, route: str, status: int, cache: str, length_bytes: int | None, seconds: float
    ) -> None:
        requests, response_bytes, latency = self._request_children(route, str(status), cache)
        requests.inc()
        if length_bytes:
            response_bytes.inc(length_bytes)
        latency.observe(seconds)

    def hits_done(
        self, route: str, count: int, length_bytes: int, latencies_s: Sequence[float]
    ) -> None:
        """A batch of hot-cache hits answered 200 (the fast path's, once per loop
        turn): the same series as ``cache_lookup("hit")`` and ``request_done(route,
        200, "hit", ...)`` for each, with one increment per counter."""
        self._child(self.cache_lookups, ("hit",)).inc(count)
        requests, response_bytes, latency = self._request_children(route, "200", "hit")
        requests.inc(count)
        if length_bytes:
            response_bytes.inc(length_bytes)
        for seconds in latencies_s:
            latency.observe(seconds)

    def render(self) -> bytes:
        """The exposition ``/metrics`` answers: this registry's (with ``--workers N``,
        every worker's, added up), build info and ``process_*``, without
        ``*_created`` and the :attr:`hidden` families."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder:
            workers = CollectorRegistry()
            multiprocess.MultiProcessCollector(workers)  # type: ignore[no-untyped-call]
            sources: list[Any] = [workers, WorkerProcesses(Path(folder)), BuildInfo()]
        else:
            sources = [self.registry]  # it has its own ProcessCollector and BuildInfo
        self.batch.flush()  # this process' values of this loop turn, in this scrape
        exported = CollectorRegistry()
        exported.register(Exported(sources, self.hidden))
        return generate_latest(exported)

    def preset(self, metric: Counter, label_sets: Iterable[tuple[str, ...]]) -> None:
        """Create the series of ``metric`` for each label set, at 0."""
        for values in label_sets:
            self._child(metric, values)


def create_metrics(*, shared_sessions: bool = False) -> Metrics:
    """``shared_sessions``: the session store is Redis, shared by every worker, so
    each worker's session count is already the total and workers must not add up;
    and only then is Redis' health exported (``cadenza_redis_up``)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(BuildInfo())
    metrics = Metrics(
        hidden=frozenset() if shared_sessions else REDIS_ONLY,
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
        sessions_active=Gauge(
            "cadenza_sessions_active",
            "Playback sessions seen within the session TTL",
            registry=registry,
            multiprocess_mode="livemax" if shared_sessions else "livesum",
        ),
        bitrate_switches=Counter(
            "cadenza_bitrate_switches",
            "Changes of encoded bitrate (CMCD br) between a session's media requests",
            registry=registry,
        ),
        buffer_starvations=Counter(
            "cadenza_buffer_starvations",
            "Buffer starvations players reported (CMCD bs, v2 sta=r, or su on the next object)",
            registry=registry,
        ),
        session_throughput_bps=Histogram(
            "cadenza_session_throughput_bits_per_second",
            "Throughput samples from sessions (CMCD mtp, or size / delivery time)",
            buckets=THROUGHPUT_BUCKETS_BPS,
            registry=registry,
        ),
        session_bitrate_bps=Histogram(
            "cadenza_session_bitrate_bits_per_second",
            "Encoded bitrate of the media objects sessions requested (CMCD br)",
            buckets=BITRATE_BUCKETS_BPS,
            registry=registry,
        ),
        session_qoe=Histogram(
            "cadenza_session_qoe",
            "Per-session QoE score in [0, 1], observed on each update",
            buckets=QOE_BUCKETS,
            registry=registry,
        ),
        beacons=Counter(
            "cadenza_beacons",
            "CMCD payloads by how they came (request, post) and what became of them",
            ["kind", "result"],
            registry=registry,
        ),
        cmcd_malformed=Counter(
            "cadenza_cmcd_malformed_values",
            "CMCD members dropped because they did not parse or had the wrong type",
            registry=registry,
        ),
        steered_manifests=Counter(
            "cadenza_steered_manifests",
            "Per-session manifests rendered, by where the guidance came from",
            ["source"],
            registry=registry,
        ),
        sessions_evicted=Counter(
            "cadenza_sessions_evicted",
            "Sessions dropped to stay within sessions_max (least recently updated first)",
            registry=registry,
        ),
        ip_rate_limited=Counter(
            "cadenza_ip_rate_limited",
            "/v1/ requests refused with 429 by the per-client-address limit (ip_rate_per_s)",
            ["route"],
            registry=registry,
        ),
        connections_refused=Counter(
            "cadenza_connections_refused",
            "Connections closed on accept because max_connections were already open",
            registry=registry,
        ),
        access_denied=Counter(
            "cadenza_access_denied",
            "Requests refused by access control (signed URLs, admin token), by reason",
            ["reason"],
            registry=registry,
        ),
        licences_issued=Counter(
            "cadenza_licences_issued",
            "ClearKey licences and AES-128 keys handed out (origin/licences.py), by kind",
            ["kind"],
            registry=registry,
        ),
        licences_refused=Counter(
            "cadenza_licences_refused",
            "Licence and key requests refused, by reason",
            ["reason"],
            registry=registry,
        ),
        redis_up=Gauge(
            "cadenza_redis_up",
            "1 while the shared session store (CADENZA_REDIS_URL) answers, 0 while it does "
            "not; not exported when none is configured",
            registry=registry,
            multiprocess_mode="livemin",
        ),
        redis_fallbacks=Counter(
            "cadenza_redis_fallbacks",
            "Session and population store operations served from local memory "
            "because Redis was unavailable",
            ["store"],
            registry=registry,
        ),
        pathway_up=Gauge(
            "cadenza_pathway_up",
            "1 while a content steering pathway (CDN) answers its health probe, 0 once it "
            "failed pathway_health_failures probes in a row",
            ["pathway"],
            registry=registry,
            multiprocess_mode="livemin",
        ),
        steering_responses=Counter(
            "cadenza_steering_responses",
            "Content steering manifests served, by player protocol and the pathway ranked first",
            ["protocol", "first"],
            registry=registry,
        ),
        steering_malformed=Counter(
            "cadenza_steering_malformed_args",
            "_HLS_/_DASH_ pathway and throughput query arguments ignored as malformed or unknown",
            ["arg"],
            registry=registry,
        ),
        fast_path_handovers=Counter(
            "cadenza_fast_path_handovers",
            "Connections handed from the fast path (origin/transport/) to aiohttp, by the "
            "reason of the first request it could not answer",
            ["reason"],
            registry=registry,
        ),
        abr_decisions=Counter(
            "cadenza_abr_decisions",
            "Segments the origin decided (?abr=origin), by the reason of the rung chosen",
            ["reason"],
            registry=registry,
        ),
        abr_switches=Counter(
            "cadenza_abr_switches",
            "Origin-decided segments whose rung differs from the session's previous one",
            registry=registry,
        ),
        abr_deliveries=Counter(
            "cadenza_abr_deliveries",
            "Origin-decided segments by how they were answered: a redirect to the rung's "
            "URL, or the bytes served directly",
            ["delivery"],
            registry=registry,
        ),
        jit=JitMetrics(registry),
        live=LiveMetrics(registry),
    )
    preset_closed_sets(metrics, redis=shared_sessions)
    return metrics
