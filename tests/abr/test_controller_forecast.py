"""The origin controller's forecast and plan beyond plain robust MPC: the start's
pessimism, the reversion toward the session's level, and the terminal value of
the buffer a plan leaves."""

from __future__ import annotations

import math
import struct
from dataclasses import replace

import numpy as np
import pytest

from cadenza.abr.controller import (
    DEFAULT_CONTROLLER,
    ControllerConfig,
    ControllerState,
    Decision,
    decide_rung,
)
from cadenza.abr.controller_inputs import Signals
from cadenza.abr.controller_memory import reverted_bps
from cadenza.abr.controller_table import DEFAULT_PLAN, end_plan, plan_first_rung, plan_values
from cadenza.abr.delivery import Delivery, deliver_decision

LADDER = (64_000, 128_000, 256_000, 320_000)
SEGMENT_S = 4.0


def decide_after(rates_bps: list[float], config: ControllerConfig = DEFAULT_CONTROLLER) -> Decision:
    """Serve one segment per rate (each measured by its delivery rate, the next request
    sent when it arrived); the decision after the last."""
    state = None
    now_s = 0.0
    decision = None
    for n in range(len(rates_bps) + 1):
        signals = Signals(buffer_ms=20_000, delivery_rate_bps=rates_bps[n - 1] if n else None)
        decision, state = decide_rung(
            LADDER, state, signals, now_s, segment_duration_s=SEGMENT_S, config=config
        )
        if n < len(rates_bps):
            now_s += LADDER[decision.index] * SEGMENT_S / rates_bps[n]
    assert decision is not None
    return decision


def feed(rates_bps: list[float], config: ControllerConfig = DEFAULT_CONTROLLER) -> float:
    """The throughput the decision after ``rates_bps`` assumed."""
    return decide_after(rates_bps, config).throughput_bps


def test_the_first_samples_are_discounted_as_if_they_had_erred() -> None:
    """With no error history a lone sample would be taken at face value; until
    ``start_samples`` the discount assumes ``start_error`` at least."""
    config = replace(DEFAULT_CONTROLLER, level_weight=0.0)
    assert feed([300_000.0], config) == pytest.approx(300_000.0 / (1 + config.start_error))
    steady = feed([300_000.0] * (config.start_samples + 1), config)
    assert steady == pytest.approx(300_000.0)  # equal samples: no error once past the start
    no_start = replace(config, start_samples=0)
    assert feed([300_000.0], no_start) == pytest.approx(300_000.0)


def test_reversion_is_the_harmonic_mean_of_the_per_segment_forecasts() -> None:
    """Checked against the formula written out: log forecasts ``level + φ^k · gap``."""
    weight, samples = DEFAULT_CONTROLLER.level_weight, 10
    level = math.log(150_000.0)
    level_log = level * (1 - (1 - weight) ** samples)  # the EWMA before its correction
    estimate = 400_000.0
    horizon = 5
    phi = DEFAULT_CONTROLLER.reversion
    forecasts = np.exp(level + phi ** np.arange(1, horizon + 1) * (math.log(estimate) - level))
    expected = horizon / float(np.sum(1.0 / forecasts))
    assert reverted_bps(estimate, level_log, samples, horizon, weight, phi) == pytest.approx(
        expected
    )
    assert 150_000.0 < expected < estimate
    # Toward the level from below too, and not at all when the estimate is the level.
    assert 50_000.0 < reverted_bps(50_000.0, level_log, samples, horizon, weight, phi) < 150_000.0
    assert reverted_bps(150_000.0, level_log, samples, horizon, weight, phi) == pytest.approx(
        150_000.0
    )


def test_no_reversion_before_the_level_holds_enough_samples_or_when_off() -> None:
    config = DEFAULT_CONTROLLER
    few = config.level_min_samples - 1
    level_log = math.log(1e5)
    args = (config.level_weight, config.reversion, config.level_min_samples)
    assert reverted_bps(400_000.0, level_log, few, 5, *args) == 400_000.0
    assert reverted_bps(400_000.0, level_log, 50, 5, 0.0, config.reversion) == 400_000.0
    assert reverted_bps(400_000.0, level_log, 50, 5, *args) < 400_000.0


def test_the_level_and_reversion_are_shares() -> None:
    with pytest.raises(ValueError, match="within"):
        replace(DEFAULT_CONTROLLER, level_weight=1.5)
    with pytest.raises(ValueError, match="within"):
        replace(DEFAULT_CONTROLLER, reversion=-0.1)


def test_a_burst_after_a_slow_session_is_not_taken_at_face_value() -> None:
    """Twenty segments at 150 kb/s, then five at 400 kb/s: the five-sample estimate is
    400 kb/s (discounted for the error the burst's first sample made), but a link that
    was slow for a minute and a half is expected to fade back, and the plan assumes
    less than that (and more than the level, discounted alike)."""
    rates = [150_000.0] * 20 + [400_000.0] * 5
    plain = replace(DEFAULT_CONTROLLER, level_weight=0.0)
    discount = 1 + DEFAULT_CONTROLLER.max_error  # the burst's first error, 0.625, capped
    assert feed(rates, plain) == pytest.approx(400_000.0 / discount)
    reverted = feed(rates)
    assert 150_000.0 / discount < reverted < 400_000.0 / discount
    # The same samples after a fast session are trusted as they are.
    assert feed([400_000.0] * 25) == pytest.approx(400_000.0)


def test_the_delivery_sees_the_link_now_not_the_reverted_forecast() -> None:
    """After a fast start, a 40 kb/s sample: the plan expects the link to come back
    toward its level over five segments, but this segment's fetch runs at the link
    now, so the origin serves it (``abr_delivery = adaptive``) rather than adding a
    redirect's round trip."""
    decision = decide_after([5e6] * 5 + [40_000.0])
    ceiling = DEFAULT_CONTROLLER.samples.over_top * LADDER[-1]  # every sample's
    samples = [min(5e6, ceiling)] * 4 + [40_000.0]
    link = len(samples) / sum(1 / x for x in samples) / (1 + DEFAULT_CONTROLLER.max_error)
    assert decision.link_bps == pytest.approx(link, rel=1e-5)
    assert decision.throughput_bps > decision.link_bps
    chosen_bytes = LADDER[decision.index] * int(SEGMENT_S) // 8
    signals = Signals(buffer_ms=20_000)
    assert deliver_decision(decision, signals, LADDER[-1], chosen_bytes) is Delivery.DIRECT
    fast = decide_after([5e6] * 6)
    assert deliver_decision(fast, signals, LADDER[-1], 160_000) is Delivery.REDIRECT


@pytest.mark.parametrize("level_log", [math.nan, -1.0, 1e300, math.inf])
def test_a_stored_level_that_cannot_be_ours_is_reset(level_log: float) -> None:
    window = struct.pack("<ff", 200_000.0, 0.0) * 5
    state = ControllerState(
        5, 10.0, 2, 20.0, 200_000.0, window, level_log=level_log, level_samples=9
    )
    decision, after = decide_rung(
        LADDER,
        state,
        Signals(buffer_ms=20_000, delivery_rate_bps=200_000.0),
        20.0,  # 10 s after the last request: the gap bounds the sample below 200 kb/s
        segment_duration_s=SEGMENT_S,
    )
    assert decision.throughput_bps == pytest.approx(200_000.0)
    assert after.level_samples == 1 and math.isfinite(after.level_log)


def test_the_terminal_value_keeps_the_buffer_the_top_rung_would_spend() -> None:
    """At 240 kb/s with 15 s of buffer after a 256 kb/s segment, five 320 kb/s segments
    take 26.7 s for 20 s of media and leave 8.3 s; five at 256 kb/s leave 13.7 s.  A
    plan that values nothing after its horizon spends the buffer on the top rung; with
    the terminal value it keeps 256 kb/s."""
    no_terminal = replace(DEFAULT_PLAN, terminal_weight=0.0)
    assert plan_first_rung(LADDER, 240_000.0, 15.0, 2, SEGMENT_S, no_terminal) == 3
    assert plan_first_rung(LADDER, 240_000.0, 15.0, 2, SEGMENT_S) == 2


def test_the_terminal_value_is_the_buffer_left_up_to_the_target() -> None:
    quality = np.array([0.064, 0.128, 0.256, 0.32])
    sizes = np.array(LADDER, dtype=np.float64) * SEGMENT_S
    combos = np.array([[0, 0], [3, 3]])
    rates = np.array([1e6])
    args = (quality, sizes, combos, rates, 10.0, SEGMENT_S, 30.0, 0.32, 2.0)
    base = plan_values(*args)
    valued = plan_values(*args, 0.12, 15.0)
    # Two 64 kb/s segments at 1 Mb/s leave 10 - 0.512 + 8 = 17.5 s: valued at the 15 s cap;
    # two 320 kb/s segments leave 10 - 2.56 + 8 = 15.44 s: also above the target.
    assert valued - base == pytest.approx(np.full((1, 2), 0.12 * 0.32 * 15.0))
    slow = plan_values(
        quality, sizes, combos, np.array([200_000.0]), 10.0, SEGMENT_S, 30.0, 0.32, 2.0, 0.12, 15.0
    )
    left = [10.0 - 2 * 64_000 * 4 / 200_000 + 8, max(10.0 - 6.4, 0) + 4 - 6.4 + 4]
    plain = plan_values(
        quality, sizes, combos, np.array([200_000.0]), 10.0, SEGMENT_S, 30.0, 0.32, 2.0
    )
    assert (slow - plain)[0] == pytest.approx([0.12 * 0.32 * min(b, 15.0) for b in left])


def test_an_end_plan_values_no_buffer_after_the_track() -> None:
    assert end_plan(DEFAULT_PLAN, 3).terminal_weight == 0.0
    assert DEFAULT_PLAN.terminal_weight > 0
