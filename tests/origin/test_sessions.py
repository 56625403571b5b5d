"""Session state from CMCD (pure), the bounded stores and the token bucket."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.origin.cmcd import parse_cmcd
from cadenza.origin.sessions import (
    Bucket,
    Delivery,
    MemoryPopulationStore,
    MemorySessionStore,
    SessionState,
    apply_cmcd,
    network_key_for,
    percentile,
    take_token,
)


def _apply(state: SessionState | None, text: str, now_s: float = 10.0) -> SessionState:
    updated, _ = apply_cmcd(state, parse_cmcd(text), now_s, sid="s", is_request=True)
    return updated


def test_first_payload_opens_a_session() -> None:
    state, changes = apply_cmcd(None, parse_cmcd("bl=3000"), 5.0, sid="s", is_request=True)
    assert changes.new_session
    assert (state.first_seen_s, state.last_seen_s, state.requests, state.last_bl_ms) == (
        5.0,
        5.0,
        1,
        3000,
    )


def test_mtp_feeds_the_estimator() -> None:
    state = _apply(None, "mtp=800,d=4000")
    assert state.estimate_kbps == pytest.approx(800.0)
    assert state.last_mtp_kbps == 800


def test_bitrate_change_on_audio_counts_a_switch() -> None:
    state = _apply(_apply(None, "br=128,ot=a"), "br=64,ot=a")
    assert (state.switches, state.last_br_kbps) == (1, 64)


def test_manifest_requests_never_count_as_switches() -> None:
    state = _apply(_apply(None, "br=128,ot=a"), "br=64,ot=m")
    assert (state.switches, state.last_br_kbps) == (0, 128)


def test_buffer_starvation_counts_a_stall() -> None:
    state, changes = apply_cmcd(None, parse_cmcd("bs"), 1.0, sid="s", is_request=True)
    assert changes.stalled and state.stalls == 1


def test_v2_rebuffering_play_state_counts_a_stall() -> None:
    assert _apply(None, "e=ps,sta=r").stalls == 1


def test_delivery_time_is_a_throughput_sample() -> None:
    state, changes = apply_cmcd(
        None, parse_cmcd(""), 1.0, sid="s", is_request=False, delivery=Delivery(64_000, 0.5)
    )
    assert changes.throughput_kbps == pytest.approx(1024.0)
    assert state.beacons == 1 and state.requests == 0


def test_mean_bitrate_is_weighted_by_duration() -> None:
    state = _apply(_apply(None, "br=64,d=4000,ot=a"), "br=320,d=1000,ot=a")
    assert state.mean_bitrate_kbps == pytest.approx((64 * 4 + 320) / 5)


def test_malformed_values_are_counted_on_the_session() -> None:
    assert _apply(None, 'bl="x",br=64').malformed == 1


def test_ect_client_hint_is_the_network_key() -> None:
    assert network_key_for("10.1.2.3", {"ECT": "3g"}) == "ect:3g"


def test_ipv4_falls_back_to_the_slash_24() -> None:
    assert network_key_for("10.1.2.3", {}) == "net:10.1.2.0/24"


def test_ipv6_falls_back_to_the_slash_48() -> None:
    assert network_key_for("2001:db8:1:2::5", {}) == "net:2001:db8:1::/48"


async def test_session_store_is_bounded() -> None:
    store = MemorySessionStore(max_sessions=3, ttl_s=60.0)
    for index in range(5):
        await store.put(SessionState(sid=f"s{index}", first_seen_s=0.0, last_seen_s=0.0))
    assert await store.count() == 3
    assert store.evictions == 2
    assert await store.get("s0") is None


async def test_population_keeps_the_latest_estimate_per_session() -> None:
    store = MemoryPopulationStore()
    await store.record("k", "a", 100.0)
    await store.record("k", "a", 300.0)
    await store.record("k", "b", 100.0)
    prior = await store.prior("k")
    assert prior is not None and prior.sessions == 2
    assert prior.p50_bps == pytest.approx(200.0)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket: Bucket | None = None
    allowed = []
    for _ in range(4):
        ok, bucket = take_token(bucket, 0.0, rate_per_s=1.0, burst=3.0)
        allowed.append(ok)
    assert allowed == [True, True, True, False]
    ok, _ = take_token(bucket, 1.0, rate_per_s=1.0, burst=3.0)
    assert ok


@given(st.lists(st.floats(min_value=0, max_value=1e9), min_size=1, max_size=50))
def test_percentiles_match_numpy(values: list[float]) -> None:
    ordered = sorted(values)
    for q in (10, 25, 50, 90):
        assert percentile(ordered, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-3)


def test_startup_ends_with_the_first_request_without_su() -> None:
    """CTA-5004 ``su``: true while the player is starting up or rebuffering to start."""
    in_startup = _apply(None, "su,bl=0")
    assert not in_startup.started
    assert _apply(in_startup, "bl=4000").started
