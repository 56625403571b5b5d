"""Session state folded from CMCD (CTA-5004), network keys and population percentiles:
all pure."""

from __future__ import annotations

import json
from urllib.parse import quote

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


def test_an_mtp_of_zero_is_a_slow_link_not_a_missing_one() -> None:
    """dash.js 5 sent ``mtp=0`` under a 30 kb/s throttle (CTA-5004 rounds to 100 kb/s):
    the session's estimate must fall, not stay at the fast sample before it."""
    fast = _apply(None, "mtp=800,d=4000")
    state, changes = apply_cmcd(fast, parse_cmcd("mtp=0,d=4000"), 14.0, sid="s", is_request=True)
    assert changes.throughput_kbps == pytest.approx(25.0)
    assert state.throughput_samples == 2
    assert state.estimate_kbps is not None and state.estimate_kbps < 800.0
    assert _apply(None, "mtp=0").estimate_kbps == pytest.approx(25.0)
    assert state.view().last_throughput_bps == pytest.approx(25_000.0)


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


def _stalls(*requests: tuple[str, str]) -> list[int]:
    """The session's stall count after each (file name, CMCD) request, in order."""
    state: SessionState | None = None
    counts = []
    for n, (name, text) in enumerate(requests):
        state, _ = apply_cmcd(
            state, parse_cmcd(text), 10.0 + n, sid="s", is_request=True, object_name=name
        )
        counts.append(state.stalls)
    return counts


def _hls(number: int, extra: str = "") -> tuple[str, str]:
    """An hls.js 1.7.4 audio request (CMCD v1): ``nor`` the next segment, percent-encoded."""
    nor = quote(f"seg-{number + 1:05d}.m4s?sid=s", safe="")
    return f"seg-{number:05d}.m4s", f'ot=a,bl=4000,nor="{nor}"' + (f",{extra}" if extra else "")


def test_a_player_waiting_for_the_next_object_is_stalled() -> None:
    """hls.js sends no ``bs`` for audio; its requests while it waits carry ``su``.  The
    start's ``su`` is no stall; one waited for, however many requests long, is one."""
    requests = [_hls(1, "su"), _hls(2, "su"), _hls(3), _hls(4), _hls(5, "su"), _hls(6, "su")]
    requests += [_hls(7), _hls(8, "su")]
    assert _stalls(*requests) == [0, 0, 0, 0, 1, 1, 1, 2]


def test_a_seek_is_not_a_stall() -> None:
    """CTA-5004 sends ``su`` after a seek too: the object asked for is not the next."""
    assert _stalls(_hls(1, "su"), _hls(2), _hls(3), _hls(20, "su"), _hls(21, "su")) == [0] * 5


def test_a_switch_of_rung_while_waiting_is_still_the_next_object() -> None:
    name, text = _hls(4, "su")
    assert _stalls(_hls(1, "su"), _hls(2), _hls(3), (name, text.replace("ot=a", "ot=a,br=64"))) == [
        0,
        0,
        0,
        1,
    ]


def test_bs_counts_once_per_stall() -> None:
    # bs after the waiting request that was counted: the same stall.
    assert _stalls(_hls(1, "su"), _hls(2), _hls(3, "su"), _hls(4, "bs,su"), _hls(5)) == [
        0,
        0,
        1,
        1,
        1,
    ]
    # bs alone, as dash.js and Shaka send it: counted each time.
    assert _stalls(_hls(1, "su"), _hls(2), _hls(3, "bs"), _hls(4), _hls(5, "bs")) == [0, 0, 1, 1, 2]


@given(st.text(max_size=80))
def test_any_nor_is_folded_without_raising(nor: str) -> None:
    """``nor`` is the player's text: a bracket, an escape, a scheme, none may raise."""
    cmcd = parse_cmcd(f'ot=a,nor="{quote(nor, safe="")}"')
    state, _ = apply_cmcd(None, cmcd, 1.0, sid="s", is_request=True, object_name="x.m4s")
    assert state.next_object is None or "/" not in state.next_object


def test_nor_names_its_file() -> None:
    for nor, name in [
        ("..%2Faac-64k%2Fseg-00006.m4s", "seg-00006.m4s"),
        ("seg-00006.m4s%3Fsid%3Ds%26CMCD%3Dx", "seg-00006.m4s"),
        ("http%3A%2F%2F%5Bbad%2Fseg-7.m4s%23f", "seg-7.m4s"),
    ]:
        state, _ = apply_cmcd(
            None, parse_cmcd(f'ot=a,nor="{nor}"'), 1.0, sid="s", is_request=True, object_name="a"
        )
        assert state.next_object == name


def test_without_the_objects_name_only_bs_counts() -> None:
    state: SessionState | None = None
    for text in ("su,ot=a", "ot=a,nor=x", "su,ot=a"):
        state = _apply(state, text)
    assert state is not None and state.stalls == 0


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
