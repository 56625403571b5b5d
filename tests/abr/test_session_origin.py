"""The origin's own measurement of a session's link (cadenza.abr.session_origin): the
throughput it reports as CMSD ``etp``."""

from __future__ import annotations

import pytest

from cadenza.abr.session import SessionState
from cadenza.abr.session_origin import note_media_request


def test_the_origins_timing_prefers_the_delivery_rate_and_ignores_pacing() -> None:
    state = note_media_request(
        SessionState("t", 0.0, 0.0), 10.0, object_bytes=64_000, segment_duration_s=4.0
    )
    assert state.origin_rate_bps is None  # nothing before it to measure
    paced = note_media_request(state, 14.0, object_bytes=64_000, segment_duration_s=4.0)
    assert paced.origin_rate_bps is None  # a segment's gap: the player waited, not the link
    quick = note_media_request(state, 10.5, object_bytes=64_000, segment_duration_s=4.0)
    assert quick.origin_rate_bps == 8 * 64_000 / 0.5
    measured = note_media_request(
        state, 10.5, object_bytes=64_000, segment_duration_s=4.0, delivery_rate_bps=3e6
    )
    assert measured.origin_rate_bps == 3e6
    smoothed = note_media_request(
        measured, 11.0, object_bytes=64_000, segment_duration_s=4.0, delivery_rate_bps=1e6
    )
    assert smoothed.origin_rate_bps == pytest.approx(2e6)


def test_the_etp_rate_takes_a_delivery_rate_only_where_the_player_could_have_seen_it() -> None:
    """The check the controller's samples pass (controller_samples.believed_delivery_bps):
    a socket rate far over the player's ``mtp``, or over an arrival a waiting player
    timed, measured a hop its bytes did not slow on (a browser's throttling)."""
    state = note_media_request(
        SessionState("e", 0.0, 0.0), 10.0, object_bytes=64_000, segment_duration_s=4.0
    )
    arrival_bps = 8 * 64_000 / 0.5

    def rate(**seen: int | None) -> float | None:
        after = note_media_request(
            state,
            10.5,
            object_bytes=64_000,
            segment_duration_s=4.0,
            delivery_rate_bps=40e9,
            **seen,  # type: ignore[arg-type]
        )
        return after.origin_rate_bps

    assert rate() == 40e9  # nothing to check it by
    assert rate(measured_kbps=200) == arrival_bps  # mtp 200: the loopback's 40 Gb/s is not it
    assert rate(buffer_ms=1_000) == arrival_bps  # waiting, 1 Mb/s arrival: not it either
    assert rate(buffer_ms=20_000) == 40e9  # pacing: the gap bounds nothing
    assert rate(measured_kbps=30_000_000) == 40e9  # the player saw as much
