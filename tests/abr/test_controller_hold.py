"""Holding the rung above the session's level while the buffer is deep
(cadenza.abr.controller_hold), alone and inside the controller."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cadenza.abr.controller import (
    DEFAULT_CONTROLLER,
    ControllerConfig,
    Decision,
    Reason,
    decide_rung,
)
from cadenza.abr.controller_hold import DEFAULT_HOLD, HoldRules, held_rung, worth_holding
from cadenza.abr.controller_inputs import Signals
from cadenza.abr.controller_table import DEFAULT_PLAN, PlanConfig

LADDER = (64_000, 128_000, 256_000, 320_000)
SEGMENT_S = 4.0
CAP_S = DEFAULT_PLAN.buffer_cap_s


def hold(
    index: int = 1,
    previous: int = 1,
    buffer_s: float = 21.0,
    level_bps: float = 200_000.0,
    recent_bps: float = 190_000.0,
    rules: HoldRules = DEFAULT_HOLD,
    plan: PlanConfig = DEFAULT_PLAN,
) -> int:
    return held_rung(
        LADDER,
        index,
        previous,
        buffer_s,
        level_bps,
        recent_bps,
        plan=plan,
        rules=rules,
    )


def test_a_deep_buffer_takes_the_rung_above_the_level() -> None:
    assert DEFAULT_HOLD.enter_buffer_fraction * CAP_S == pytest.approx(20.0)
    assert hold(buffer_s=20.0) == 2
    assert hold(buffer_s=19.9) == 1  # not deep enough to go up


def test_a_held_rung_is_kept_down_to_the_lower_threshold() -> None:
    keep_s = DEFAULT_HOLD.keep_buffer_fraction * CAP_S
    assert keep_s == pytest.approx(10.0)
    assert hold(previous=2, buffer_s=keep_s) == 2
    assert hold(previous=3, buffer_s=keep_s) == 2  # coming down from above stops at it
    assert hold(previous=2, buffer_s=keep_s - 0.1) == 1
    assert hold(previous=1, buffer_s=15.0) == 1  # not held before: not taken here


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("in a dip", {"recent_bps": 0.79 * 200_000.0}),
        ("rung far above the level", {"level_bps": 180_000.0}),  # 256k > 1.4 x 180k
        ("level above the top rung", {"level_bps": 400_000.0, "recent_bps": 400_000.0}),
        ("level unknown", {"level_bps": 0.0}),
        ("the plan is already there", {"index": 2}),
        ("the plan is above it", {"index": 3}),
        ("disabled", {"rules": replace(DEFAULT_HOLD, enabled=False)}),
    ],
)
def test_the_plan_stands(case: str, kwargs: dict[str, object]) -> None:
    expected = int(kwargs.get("index", 1))  # type: ignore[call-overload]
    assert hold(**kwargs) == expected, case  # type: ignore[arg-type]


def test_a_step_worth_too_little_of_a_stall_second_is_not_held() -> None:
    """Satellite's level (about 95 kb/s) sits below 128k, 1.35 times it, but the step from
    64k is worth 64/320 = 0.2 of a stall second per second: too little for the risk."""
    assert worth_holding(LADDER, DEFAULT_PLAN, 0.3) == (False, False, True, False)
    assert hold(index=0, previous=0, level_bps=95_000.0, recent_bps=95_000.0) == 0
    # The worth is the plan's objective's: with stalls priced at half, the step is 0.4.
    cheap_stalls = replace(DEFAULT_PLAN, rebuffer_penalty=0.5)
    assert worth_holding(LADDER, cheap_stalls, 0.3) == (False, True, True, True)
    held = hold(index=0, previous=0, level_bps=95_000.0, recent_bps=95_000.0, plan=cheap_stalls)
    assert held == 1


def test_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="keep_buffer_fraction"):
        HoldRules(enter_buffer_fraction=0.3, keep_buffer_fraction=0.5)
    with pytest.raises(ValueError, match="max_over_level"):
        HoldRules(max_over_level=0.9)


def session(
    rates_bps: list[float], buffers_s: list[float], config: ControllerConfig
) -> list[Decision]:
    """One decision per request; each previous segment measured at its rate."""
    decisions: list[Decision] = []
    state = None
    now_s = 0.0
    for n, buffer_s in enumerate(buffers_s):
        rate = rates_bps[n - 1] if n else None
        signals = Signals(buffer_ms=round(buffer_s * 1000), delivery_rate_bps=rate)
        decision, state = decide_rung(
            LADDER, state, signals, now_s, segment_duration_s=SEGMENT_S, config=config
        )
        decisions.append(decision)
        if n < len(rates_bps):
            now_s += LADDER[decision.index] * SEGMENT_S / rates_bps[n]
    return decisions


def test_the_controller_alternates_around_a_level_between_rungs() -> None:
    """A noisy link at about 200 kb/s: the plan's discounted forecast keeps 128k, the hold
    takes 256k once the buffer is deep, keeps it while it drains to 10 s, then lets go."""
    rates = [140_000.0, 260_000.0, 180_000.0, 240_000.0, 150_000.0, 250_000.0] * 3
    buffers = [4.0, 8.0, 12.0, 16.0, 20.0, 22.0, 24.0, 22.0, 19.0, 16.0, 13.0, 11.0]
    buffers += [9.5, 11.0, 14.0, 17.0, 19.0, 21.0, 22.0]
    held = session(rates, buffers, DEFAULT_CONTROLLER)
    plain = session(
        rates, buffers, replace(DEFAULT_CONTROLLER, hold=replace(DEFAULT_HOLD, enabled=False))
    )
    assert {d.bitrate_bps for d in plain[4:]} <= {128_000, 64_000}  # the plan alone never goes up
    rungs = [(d.bitrate_bps, d.reason) for d in held]
    assert rungs[4] == (256_000, Reason.LEVEL_HOLD)  # 20 s: up
    # 22 .. 11 s: kept (the plan keeps it itself while the buffer is deep, the hold
    # where the plan would step down).
    assert [bitrate for bitrate, _ in rungs[5:12]] == [256_000] * 7
    assert rungs[10][1] == rungs[11][1] == Reason.LEVEL_HOLD
    assert rungs[12][0] < 256_000  # 9.5 s: let go
    assert {bitrate for bitrate, _ in rungs[13:17]} == {128_000}  # not back up before 20 s
    assert rungs[17] == (256_000, Reason.LEVEL_HOLD)  # 21 s again: up
    assert held[4].throughput_bps == plain[4].throughput_bps  # the plan's forecast is reported
