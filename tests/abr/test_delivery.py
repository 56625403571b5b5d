"""The adaptive delivery rule (``abr_delivery = adaptive``, cadenza.abr.delivery):
redirect or serve each origin-decided segment, a pure function of its inputs."""

from __future__ import annotations

import pytest

from cadenza.abr.controller import Decision, Reason
from cadenza.abr.controller_inputs import Signals
from cadenza.abr.delivery import (
    DEFAULT_DELIVERY_RULE,
    Delivery,
    DeliveryRule,
    choose_delivery,
    deliver_decision,
)

TOP_BPS = 320_000
SEGMENT_BYTES = 160_000  # 4 s at 320 kb/s


def test_a_link_with_room_above_the_ladder_is_redirected() -> None:
    fast = DEFAULT_DELIVERY_RULE.headroom * TOP_BPS * 1.01
    assert choose_delivery(fast, TOP_BPS, SEGMENT_BYTES, 20.0, True) is Delivery.REDIRECT
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 0.5, True) is Delivery.REDIRECT


def test_a_link_the_ladder_saturates_is_served() -> None:
    slow = DEFAULT_DELIVERY_RULE.headroom * TOP_BPS * 0.99
    assert choose_delivery(slow, TOP_BPS, SEGMENT_BYTES, 20.0, True) is Delivery.DIRECT
    # The threshold follows the ladder, not an absolute rate.
    assert choose_delivery(slow, TOP_BPS // 4, SEGMENT_BYTES, 20.0, True) is Delivery.REDIRECT


@pytest.mark.parametrize("throughput_bps", [0.0, -1.0])
def test_an_unknown_estimate_is_served(throughput_bps: float) -> None:
    rule = DeliveryRule(headroom=0.0, startup=False)
    assert choose_delivery(throughput_bps, TOP_BPS, SEGMENT_BYTES, 20.0, True, 0.1, rule) is (
        Delivery.DIRECT
    )


def test_before_playback_every_segment_is_served_unless_the_rule_says_otherwise() -> None:
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 0.0, False) is Delivery.DIRECT
    no_start = DeliveryRule(startup=False)
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 0.0, False, None, no_start) is (
        Delivery.REDIRECT
    )


def test_a_low_buffer_is_served_when_the_rule_has_a_buffer_threshold() -> None:
    rule = DeliveryRule(low_buffer_s=6.0)
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 5.9, True, None, rule) is Delivery.DIRECT
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 6.0, True, None, rule) is (
        Delivery.REDIRECT
    )
    # Off by default.
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 0.1, True) is Delivery.REDIRECT


def test_a_round_trip_that_is_a_large_share_of_the_fetch_is_served() -> None:
    # 160 kB at 5 Mb/s: 0.256 s of transfer.  A 0.1 s RTT is 28 % of the fetch.
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 20.0, True, 0.1) is Delivery.DIRECT
    # 0.05 s: 16 %, below the default 20 %.
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 20.0, True, 0.05) is Delivery.REDIRECT
    assert choose_delivery(5e6, TOP_BPS, SEGMENT_BYTES, 20.0, True, None) is Delivery.REDIRECT


def _decision(reason: Reason, throughput_bps: float) -> Decision:
    return Decision(3, TOP_BPS, reason, throughput_bps, 20.0, throughput_bps)


@pytest.mark.parametrize("reason", [Reason.START_DEFAULT, Reason.START_PRIOR, Reason.START_ECT])
def test_a_start_decision_is_served_even_without_cmcd(reason: Reason) -> None:
    """A player that sends no CMCD never says ``su``: the start decision says it."""
    decided = _decision(reason, 5e6)
    assert deliver_decision(decided, Signals(), TOP_BPS, SEGMENT_BYTES) is Delivery.DIRECT


def test_a_decision_in_playback_uses_its_estimate_and_cmcd_startup() -> None:
    fast = _decision(Reason.MPC, 5e6)
    assert deliver_decision(fast, Signals(), TOP_BPS, SEGMENT_BYTES) is Delivery.REDIRECT
    starting = Signals(startup=True)
    assert deliver_decision(fast, starting, TOP_BPS, SEGMENT_BYTES) is Delivery.DIRECT
    slow = _decision(Reason.MPC, 200_000.0)
    assert deliver_decision(slow, Signals(), TOP_BPS, SEGMENT_BYTES) is Delivery.DIRECT
