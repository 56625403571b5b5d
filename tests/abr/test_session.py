"""Session state folded from CMCD (CTA-5004), network keys and population percentiles:
all pure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.abr.cmcd import parse_cmcd
from cadenza.abr.errors import BeaconLogError
from cadenza.abr.population import final_estimates_bps, network_key_for, percentile
from cadenza.abr.session import Delivery, SessionState, apply_cmcd


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


def test_beacon_log_gives_each_session_its_final_estimate() -> None:
    """CMCD text and JSON lines fold per ``sid``; a session without ``mtp`` is left out."""
    lines = [
        'sid="a",mtp=100,d=4000',
        "",
        json.dumps({"sid": "b", "mtp": 400, "d": 4000}),
        'sid="c",bl=300',
        "mtp=999",  # no sid: skipped
        'sid="a",mtp=100,d=4000',
    ]
    estimates = final_estimates_bps(lines)
    assert len(estimates) == 2
    assert estimates[0] == pytest.approx(100e3, rel=1e-6)
    assert estimates[1] == pytest.approx(400e3, rel=1e-6)


@pytest.mark.parametrize(("line", "reason"), [("{nope", "not JSON"), ("{}x", "not JSON")])
def test_beacon_log_names_the_line_that_is_not_json(line: str, reason: str) -> None:
    with pytest.raises(BeaconLogError, match=reason) as caught:
        final_estimates_bps(['sid="a",mtp=100', line])
    assert caught.value.line_no == 2
