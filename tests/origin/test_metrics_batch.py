"""Histogram values applied once per event-loop turn (origin.metrics_batch):
``/metrics`` shows what ``observe`` would have shown, bit for bit."""

from __future__ import annotations

import asyncio
import random

import pytest

from cadenza.origin.metrics import LATENCY_BUCKETS_S, create_metrics

FAMILIES = (
    "cadenza_session_throughput_bits_per_second",
    "cadenza_session_bitrate_bits_per_second",
    "cadenza_session_qoe",
    "cadenza_request_duration_seconds",
)


COUNTERS = (
    "cadenza_abr_decisions_total",
    "cadenza_abr_switches_total",
    "cadenza_requests_total",
    "cadenza_response_bytes_total",
)


def _series(text: str, families: tuple[str, ...] = FAMILIES) -> list[str]:
    """The exposition lines of the families under test (a sum's text tells every
    last bit of it; a NaN compares as text)."""
    return sorted(line for line in text.splitlines() if line.startswith(families))


def _values(rng: random.Random) -> list[float]:
    edges = [*LATENCY_BUCKETS_S, 0.1 + 1e-12, 0.0, 1e9, float("inf"), float("nan")]
    return [rng.choice(edges) if rng.random() < 0.2 else rng.random() * 3 for _ in range(500)]


async def test_batched_values_render_as_observed_ones() -> None:
    rng = random.Random(7)
    values = _values(rng)
    direct, batched = create_metrics(), create_metrics()
    for value in values:
        direct.session_qoe.observe(value)
        direct.session_throughput_bps.observe(value * 1e6)
        direct.latency.labels("media").observe(value)
        direct.latency.labels("manifest").observe(value / 3)
    for index, value in enumerate(values):
        batched.batch.of(batched.session_qoe).observe(value)
        batched.batch.of(batched.session_throughput_bps).observe(value * 1e6)
        batched.request_done("media", 200, "hit", None, value)
        batched.request_done("manifest", 200, "hit", None, value / 3)
        if index % 50 == 0:
            await asyncio.sleep(0)  # a loop turn: the queued values are applied
    expected = _series(direct.render().decode())
    rendered = _series(batched.render().decode())
    # A render applies what this loop turn queued.
    assert rendered == expected
    counted = sum(1 for value in values if value == value)  # a NaN is in no bucket
    assert f"cadenza_session_qoe_count {float(counted)}" in expected


async def test_values_are_applied_after_the_loop_turn() -> None:
    metrics = create_metrics()
    read = metrics.registry.get_sample_value
    batched = metrics.batch.of(metrics.session_bitrate_bps)
    batched.observe(128_000)
    batched.observe(256_000)
    assert read("cadenza_session_bitrate_bits_per_second_count") == 0
    await asyncio.sleep(0)
    assert read("cadenza_session_bitrate_bits_per_second_count") == 2
    assert read("cadenza_session_bitrate_bits_per_second_sum") == 384_000


def test_without_an_event_loop_a_value_is_observed_at_once() -> None:
    metrics = create_metrics()
    metrics.batch.of(metrics.session_qoe).observe(0.5)
    assert metrics.registry.get_sample_value("cadenza_session_qoe_count") == 1
    assert metrics.registry.get_sample_value("cadenza_session_qoe_sum") == 0.5


async def test_counter_increments_are_added_up_per_loop_turn() -> None:
    metrics = create_metrics()
    read = metrics.registry.get_sample_value
    for _ in range(3):
        metrics.delivered("redirect")
    metrics.request_done("media", 302, "decided", 0, 0.001)
    metrics.request_done("media", 200, "decided", 65_177, 0.001)
    labels = {"delivery": "redirect"}
    assert read("cadenza_abr_deliveries_total", labels) == 0  # queued, not applied
    await asyncio.sleep(0)
    assert read("cadenza_abr_deliveries_total", labels) == 3
    assert (
        read("cadenza_requests_total", {"route": "media", "status": "302", "cache": "decided"}) == 1
    )
    assert read("cadenza_response_bytes_total", {"route": "media"}) == 65_177
    metrics.delivered("redirect")
    # A scrape applies what this loop turn queued.
    assert 'cadenza_abr_deliveries_total{delivery="redirect"} 4.0' in metrics.render().decode()


async def test_batched_counters_render_as_direct_increments() -> None:
    rng = random.Random(11)
    direct, batched = create_metrics(), create_metrics()
    for index in range(400):
        reason, switched = rng.choice(["mpc", "buffer_low", "start_prior"]), rng.random() < 0.3
        size = rng.choice([0, 1, 65_177, 2**40])
        direct.abr_decisions.labels(reason).inc()
        if switched:
            direct.abr_switches.inc()
        direct.requests.labels("media", "200", "hit").inc()
        if size:
            direct.response_bytes.labels("media").inc(size)
        batched.decided(reason, switched)
        batched.request_done("media", 200, "hit", size, 0.0)
        if index % 37 == 0:
            await asyncio.sleep(0)
    expected = _series(direct.render().decode(), COUNTERS)
    assert _series(batched.render().decode(), COUNTERS) == expected
    assert any(line.endswith(" 400.0") for line in expected)


def test_without_an_event_loop_an_increment_is_applied_at_once() -> None:
    metrics = create_metrics()
    metrics.delivered("direct")
    assert (
        metrics.registry.get_sample_value("cadenza_abr_deliveries_total", {"delivery": "direct"})
        == 1
    )


def test_a_negative_increment_is_refused_at_once() -> None:
    metrics = create_metrics()
    counter = metrics.batch.counted(metrics.abr_switches)
    with pytest.raises(ValueError, match="non-negative"):
        counter.inc(-1)
