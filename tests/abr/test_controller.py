"""The origin's ABR controller: the decision table against the online robust-MPC
plan, caps that always hold, the buffer and start rules, and purity."""

from __future__ import annotations

import itertools
import struct
from dataclasses import replace

import numpy as np
import pytest

from cadenza.abr.cmcd import parse_cmcd
from cadenza.abr.controller import (
    DEFAULT_CONTROLLER,
    INITIAL_STATE,
    ControllerConfig,
    ControllerState,
    Decision,
    Reason,
    decide_rung,
    throughput_sample_bps,
)
from cadenza.abr.controller_inputs import (
    Ect,
    Signals,
    parse_ect,
    parse_save_data,
    signals_from_cmcd,
)
from cadenza.abr.controller_samples import SampleRules
from cadenza.abr.controller_table import (
    DEFAULT_PLAN,
    NO_PREVIOUS,
    Objective,
    PlanConfig,
    decision_table,
    end_plan,
    plan_first_rung,
    plan_horizon,
    plan_values,
    sequences,
)
from cadenza.abr.policy import Population
from cadenza.abr.sim.baselines import mpc_plan_values
from cadenza.abr.sim.qoe import perceptual_quality, quality_mbps

LADDER = (64_000, 128_000, 256_000, 320_000)
SEGMENT_S = 4.0


def run(
    signals: list[Signals],
    gap_s: float = 2.0,
    population: Population | None = None,
    ladder: tuple[int, ...] = LADDER,
    config: ControllerConfig = DEFAULT_CONTROLLER,
) -> tuple[list[Decision], ControllerState]:
    """Feed one request per signal, ``gap_s`` apart; the decisions and the final state."""
    state: ControllerState | None = None
    decisions: list[Decision] = []
    for n, signal in enumerate(signals):
        decision, state = decide_rung(
            ladder,
            state,
            signal,
            n * gap_s,
            segment_duration_s=SEGMENT_S,
            population=population,
            config=config,
        )
        decisions.append(decision)
    assert state is not None
    return decisions, state


def steady(kbps: int, buffer_ms: int, count: int = 8, **extra: object) -> list[Signals]:
    first = Signals(startup=True, buffer_ms=0, **extra)  # type: ignore[arg-type]
    rest = Signals(
        buffer_ms=buffer_ms,
        measured_kbps=kbps,
        encoded_kbps=128,
        object_ms=4000,
        **extra,  # type: ignore[arg-type]
    )
    return [first] + [rest] * (count - 1)


def brute_force_best_first_rungs(
    throughput_bps: float, buffer_s: float, previous: int, plan: PlanConfig = DEFAULT_PLAN
) -> set[int]:
    """Every first rung of a best plan, by a plain loop over every sequence: the
    objective's utility per segment, its stall price per second of rebuffering,
    ``switch_penalty`` times each quality change."""
    if plan.objective is Objective.LINEAR:
        quality = [quality_mbps(b) for b in LADDER]
        stall_price = plan.rebuffer_penalty * quality_mbps(LADDER[-1])
    else:
        quality = [perceptual_quality(b) for b in LADDER]
        stall_price = plan.rebuffer_penalty
    scored: list[tuple[float, int]] = []
    for rungs in itertools.product(range(len(LADDER)), repeat=plan.horizon):
        buffer, rebuffer, value = buffer_s, 0.0, 0.0
        last = previous
        for rung in rungs:
            download = LADDER[rung] * SEGMENT_S / throughput_bps
            rebuffer += max(download - buffer, 0.0)
            buffer = min(max(buffer - download, 0.0) + SEGMENT_S, plan.buffer_cap_s)
            change = abs(quality[rung] - quality[last]) if last >= 0 else 0.0
            value += quality[rung] - plan.switch_penalty * change
            last = rung
        scored.append((value - stall_price * rebuffer, rungs[0]))
    best = max(value for value, _ in scored)
    return {first for value, first in scored if value >= best - 1e-9}


def test_table_equals_the_online_plan_on_a_grid_of_states() -> None:
    table = decision_table(LADDER, SEGMENT_S)
    checked = 0
    for previous in (NO_PREVIOUS, 0, 1, 2, 3):
        for b in range(0, table.buffer_cells, 5):
            for t in range(0, table.throughput_cells, 4):
                buffer_s, rate = table.buffer_at(b), table.throughput_at(t)
                online = plan_first_rung(LADDER, rate, buffer_s, previous, SEGMENT_S)
                assert table.lookup(buffer_s, rate, previous) == online, (b, t, previous)
                checked += 1
    assert checked > 1000


def test_off_grid_states_take_the_plan_of_the_grid_state_below() -> None:
    """The documented quantisation: buffer and throughput are floored to the grid."""
    table = decision_table(LADDER, SEGMENT_S)
    for buffer_s, rate in [(3.3, 151_000.0), (0.2, 97_000.0), (17.9, 260_000.0)]:
        b, t = table.buffer_cell(buffer_s), table.throughput_cell(rate)
        assert table.buffer_at(b) <= buffer_s < table.buffer_at(b + 1)
        assert table.throughput_at(t) <= rate < table.throughput_at(t + 1)
        floored = plan_first_rung(LADDER, table.throughput_at(t), table.buffer_at(b), 1, SEGMENT_S)
        assert table.lookup(buffer_s, rate, 1) == floored


@pytest.mark.parametrize("objective", list(Objective))
@pytest.mark.parametrize(
    ("rate", "buffer_s", "previous"),
    [(90e3, 0.0, NO_PREVIOUS), (150e3, 6.0, 1), (300e3, 2.0, 3), (500e3, 20.0, 0)],
)
def test_online_plan_is_the_exhaustive_best(
    rate: float, buffer_s: float, previous: int, objective: Objective
) -> None:
    plan = replace(DEFAULT_PLAN, objective=objective)
    chosen = plan_first_rung(LADDER, rate, buffer_s, previous, SEGMENT_S, plan)
    assert chosen in brute_force_best_first_rungs(rate, buffer_s, previous, plan)


def test_linear_objective_plans_as_robust_mpc_does() -> None:
    """At a switch weight of one the linear plan is the simulator's RobustMpc's
    (QoE_lin) choice, state for state; at two it keeps the previous rung more often."""
    plan = replace(
        DEFAULT_PLAN, objective=Objective.LINEAR, switch_penalty=1.0, terminal_weight=0.0
    )
    combos = sequences(len(LADDER), plan.horizon)
    kept_ours = kept_theirs = 0
    for rate in (70e3, 110e3, 180e3, 260e3, 400e3):
        for buffer_s in (0.0, 3.0, 9.5, 21.0):
            for previous in range(len(LADDER)):
                values = mpc_plan_values(LADDER, combos, rate, buffer_s, previous, SEGMENT_S, 30.0)
                theirs = int(combos[int(np.argmax(values)), 0])
                assert plan_first_rung(LADDER, rate, buffer_s, previous, SEGMENT_S, plan) == theirs
                ours = plan_first_rung(LADDER, rate, buffer_s, previous, SEGMENT_S)
                kept_ours += ours == previous
                kept_theirs += theirs == previous
    assert kept_ours > kept_theirs


def test_the_default_plan_scores_qoe_lin() -> None:
    """The report's % of optimal is QoE_lin: the origin plans on it (perceptual
    planning scored lower in % of optimal on seven of the eight bundled sets)."""
    assert DEFAULT_PLAN.objective is Objective.LINEAR
    linear = decision_table(LADDER, SEGMENT_S)
    perceptual = decision_table(
        LADDER, SEGMENT_S, replace(DEFAULT_PLAN, objective=Objective.PERCEPTUAL)
    )
    assert linear.cells != perceptual.cells
    # At a fast link and an empty buffer QoE_lin's stall price is worth the top rung.
    assert linear.lookup(0.0, 4e6, NO_PREVIOUS) == len(LADDER) - 1


def test_plan_model_is_robust_mpcs_with_qoe_lin_utilities() -> None:
    """With QoE_lin's utilities the plan values are the simulator's RobustMpc's."""
    combos = sequences(len(LADDER), 3)
    quality = np.asarray(LADDER, dtype=np.float64) / 1e6
    sizes = np.asarray(LADDER, dtype=np.float64) * SEGMENT_S
    for rate, buffer_s in [(100e3, 0.0), (250e3, 7.5), (1e6, 29.0)]:
        ours = plan_values(quality, sizes, combos, np.array([rate]), buffer_s, SEGMENT_S, 30.0,
                           float(quality[-1]))[0]  # fmt: skip
        theirs = mpc_plan_values(LADDER, combos, rate, buffer_s, None, SEGMENT_S, 30.0)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_same_inputs_same_decision_and_state() -> None:
    signals = steady(300, 9000)
    first = run(signals)
    assert first == run(signals)
    assert first[1].requests == len(signals)


@pytest.mark.parametrize("kbps", [0, 100, 300, 900, 5000])
@pytest.mark.parametrize("buffer_ms", [0, 3000, 12000, 30000])
def test_save_data_caps_at_the_lowest_rung(kbps: int, buffer_ms: int) -> None:
    decisions, _ = run(steady(kbps, buffer_ms, save_data=True))
    assert all(d.index == 0 for d in decisions)
    if kbps >= 900 and buffer_ms >= 12000:
        assert decisions[-1].reason is Reason.SAVE_DATA


@pytest.mark.parametrize("max_bps", [50_000, 64_000, 200_000, 256_000, 1_000_000])
@pytest.mark.parametrize("kbps", [100, 300, 2000])
def test_max_bitrate_is_never_exceeded(max_bps: int, kbps: int) -> None:
    decisions, _ = run(steady(kbps, 20000, max_bitrate_bps=max_bps))
    for decision in decisions:
        assert decision.bitrate_bps <= max(max_bps, LADDER[0])
    if kbps >= 2000 and max_bps < LADDER[-1]:
        assert decisions[-1].reason is Reason.MAX_BITRATE


def test_ect_2g_caps_and_4g_starts_higher_than_nothing() -> None:
    decisions, _ = run(steady(2000, 20000, ect=Ect.G2))
    assert {d.index for d in decisions} == {0}
    assert decisions[-1].reason is Reason.ECT_CAP
    start_4g = decide_rung(LADDER, None, Signals(ect=Ect.G4), 0.0, segment_duration_s=SEGMENT_S)[0]
    start_none = decide_rung(LADDER, None, Signals(), 0.0, segment_duration_s=SEGMENT_S)[0]
    assert (start_none.index, start_none.reason) == (0, Reason.START_DEFAULT)
    assert start_4g.reason is Reason.START_ECT
    assert start_4g.index > start_none.index


def test_population_prior_sets_the_start_rung() -> None:
    fast = Population("k", 10, 1.5e6, 2e6, 3e6, 5e6)
    slow = Population("k", 10, 60e3, 80e3, 100e3, 150e3)
    too_few = Population("k", 2, 1.5e6, 2e6, 3e6, 5e6)

    def start(population: Population) -> Decision:
        return decide_rung(
            LADDER, None, Signals(), 0.0, segment_duration_s=SEGMENT_S, population=population
        )[0]

    assert start(fast).reason is Reason.START_PRIOR
    assert start(fast).index > start(slow).index == 0
    assert start(too_few).reason is Reason.START_DEFAULT


def test_a_low_buffer_forces_a_lower_rung() -> None:
    """Same throughput history, same previous rung: only the buffer differs."""
    _, state = run(steady(400, 20000, count=6))
    full, _ = decide_rung(
        LADDER, state, Signals(buffer_ms=20000, measured_kbps=400), 12.0, segment_duration_s=4.0
    )
    low, _ = decide_rung(
        LADDER, state, Signals(buffer_ms=800, measured_kbps=400), 12.0, segment_duration_s=4.0
    )
    assert full.index > low.index


def test_a_playing_session_below_the_panic_buffer_gets_the_lowest_rung() -> None:
    """At 3 Mb/s the plan alone would take a high rung even at 1.5 s of buffer."""
    _, state = run(steady(3000, 20000, count=6))
    signals = Signals(buffer_ms=1500, measured_kbps=3000)
    assert plan_first_rung(LADDER, 2.5e6, 1.5, state.last_index, SEGMENT_S) > 0
    panic, _ = decide_rung(LADDER, state, signals, 12.0, segment_duration_s=4.0)
    assert (panic.index, panic.reason) == (0, Reason.BUFFER_LOW)


def test_a_buffer_never_built_is_a_start_not_a_panic() -> None:
    """dash.js sends su=true on its first media request only: its second arrives with
    bl near 0 and no su.  On a fast link that is the start of playback, not a buffer
    draining (a real dash.js got 64k for its second segment every run); a buffer that
    was built and then fell short still is."""
    _, state = decide_rung(
        LADDER, None, Signals(buffer_ms=0, measured_kbps=3000, startup=True), 0.0,
        segment_duration_s=SEGMENT_S,
    )  # fmt: skip
    second, state = decide_rung(
        LADDER, state, Signals(buffer_ms=300, measured_kbps=3000), 1.0,
        segment_duration_s=SEGMENT_S,
    )  # fmt: skip
    assert second.reason is not Reason.BUFFER_LOW and second.index > 0
    _, built = run(steady(3000, 20000, count=6))
    drained, _ = decide_rung(
        LADDER, built, Signals(buffer_ms=300, measured_kbps=3000), 30.0,
        segment_duration_s=SEGMENT_S,
    )  # fmt: skip
    assert (drained.index, drained.reason) == (0, Reason.BUFFER_LOW)


def test_starvation_with_little_buffer_drops_to_the_lowest_rung() -> None:
    _, state = run(steady(400, 20000, count=6))
    starved, _ = decide_rung(
        LADDER,
        state,
        Signals(buffer_ms=3000, measured_kbps=400, starved=True),
        12.0,
        segment_duration_s=4.0,
    )
    assert (starved.index, starved.reason) == (0, Reason.BUFFER_LOW)


def test_requested_max_throughput_caps_the_assumed_throughput() -> None:
    plain, _ = run(steady(3000, 6000))
    limited, _ = run(steady(3000, 6000, requested_max_kbps=100))
    assert limited[-1].throughput_bps <= 100_000
    assert limited[-1].index < plain[-1].index


def test_without_cmcd_fast_requests_are_throughput_samples() -> None:
    """No CMCD at all: back-to-back requests (1 s apart for 4 s of 64 kb/s, so at
    least 256 kb/s) climb; requests a segment apart (pacing) measure nothing."""
    fast, _ = run([Signals()] * 8, gap_s=1.0)
    paced, state = run([Signals()] * 8, gap_s=SEGMENT_S)
    assert fast[-1].index > 0
    assert fast[-1].throughput_bps >= 256_000 * 0.5
    assert {d.index for d in paced} == {0}
    assert state.window == b""


def test_state_stays_small_however_long_the_session() -> None:
    _, state = run(steady(500, 20000, count=200))
    samples, errors = state.samples_and_errors()
    assert len(samples) == len(errors) == 5
    assert state.requests == 200


def test_delivery_rate_outranks_the_rounded_mtp() -> None:
    """The TCP delivery rate is the origin's exact measure of the same link: within
    1.5 times the top of mtp's interval it is the sample (above what mtp says)."""
    signals = [Signals(startup=True)] + [
        Signals(buffer_ms=10000, measured_kbps=200, delivery_rate_bps=330_000)
    ] * 5
    decisions, state = run(signals, gap_s=2 * SEGMENT_S)  # the timing's bound: half a rung
    assert state.samples_and_errors()[0][-1] == pytest.approx(330_000)
    assert decisions[-1].throughput_bps > 250_000  # above mtp's interval


def test_a_delivery_rate_far_above_what_the_player_measured_gives_way_to_its_mtp() -> None:
    """A socket that drains at 10 Mb/s while the player measures 150 kb/s: something
    past the socket (a browser's throttling, a proxy) slows the bytes, and the socket
    does not measure the player's link.  The sample is then mtp's, as without the
    delivery rate (its interval's low end); without mtp, the delivery rate itself, up
    to four times the top rung (the ceiling of every sample)."""
    fast = Signals(buffer_ms=10000, measured_kbps=150, delivery_rate_bps=10e6)
    # Requests ten segments apart: the request timing's bound (the rung over the gap)
    # stays far below.
    paced = 10 * SEGMENT_S
    _, state = run([Signals(startup=True)] + [fast] * 5, gap_s=paced)
    assert state.samples_and_errors()[0][-1] == pytest.approx(100_000)
    alone = [Signals(startup=True)] + [replace(fast, measured_kbps=None)] * 5
    _, trusted = run(alone, gap_s=paced)
    assert trusted.samples_and_errors()[0][-1] == pytest.approx(4 * LADDER[-1])
    no_ceiling = ControllerConfig(samples=SampleRules(over_top=0.0))
    _, uncapped = run(alone, gap_s=paced, config=no_ceiling)
    assert uncapped.samples_and_errors()[0][-1] == pytest.approx(10e6)
    unlimited = ControllerConfig(samples=SampleRules(delivery_over_seen=0.0, over_top=0.0))
    _, trusting = run([Signals(startup=True)] + [fast] * 5, gap_s=paced, config=unlimited)
    assert trusting.samples_and_errors()[0][-1] == pytest.approx(10e6)


def test_signals_from_cmcd_and_client_hints() -> None:
    cmcd = parse_cmcd("bl=2300,br=128,d=4000,mtp=700,rtp=900,su,bs")
    signals = signals_from_cmcd(cmcd, save_data=parse_save_data("on"), ect=parse_ect("3g"))
    assert signals == Signals(
        buffer_ms=2300,
        measured_kbps=700,
        encoded_kbps=128,
        object_ms=4000,
        startup=True,
        starved=True,
        requested_max_kbps=900,
        save_data=True,
        ect=Ect.G3,
    )
    assert parse_ect("5g") is None
    assert parse_save_data("off") is False
    assert signals_from_cmcd(parse_cmcd("bl=-5,d=0")) == Signals()


def test_initial_state_is_empty() -> None:
    assert INITIAL_STATE.samples_and_errors() == ([], [])


@pytest.mark.parametrize(
    "signals",
    [
        Signals(measured_kbps=999_999_999_999_999, buffer_ms=10**15, encoded_kbps=10**12),
        Signals(buffer_ms=-5, measured_kbps=0, object_ms=1, max_bitrate_bps=-1),
        Signals(delivery_rate_bps=float("nan"), requested_max_kbps=1),
        Signals(delivery_rate_bps=float("inf"), encoded_kbps=1, object_ms=10**12),
    ],
)
def test_hostile_values_give_a_rung_of_the_ladder(signals: Signals) -> None:
    state: ControllerState | None = None
    for now_s in (0.0, 1e-12, 2e-12, -5.0, 1e12):
        decision, state = decide_rung(LADDER, state, signals, now_s, segment_duration_s=SEGMENT_S)
        assert decision.bitrate_bps == LADDER[decision.index]


def test_a_state_from_a_longer_ladder_still_decides_on_a_shorter_one() -> None:
    """A session that moves to another group keeps its throughput, not its rung."""
    _, state = run(steady(3000, 20000), ladder=(*LADDER, 512_000, 640_000))
    assert state.last_index > len(LADDER) - 1
    decision, _ = decide_rung(
        LADDER, state, Signals(buffer_ms=20000, measured_kbps=3000), 20.0, segment_duration_s=4.0
    )
    assert decision.index == len(LADDER) - 1


def test_every_packager_ladder_plans_five_segments_ahead() -> None:
    assert [plan_horizon(rungs, 5) for rungs in (1, 4, 6, 7, 9)] == [5, 5, 5, 4, 4]


@pytest.mark.parametrize(
    "state",
    [
        ControllerState(requests=2, last_request_s=2.0, window=b"\x00\x01\xfe\xff"),
        ControllerState(requests=3, last_request_s=float("nan"), buffer_s=float("nan")),
        ControllerState(
            requests=1, last_index=99, last_prediction_bps=float("inf"), window=b"\xff" * 40
        ),
    ],
)
def test_a_corrupted_stored_state_still_gives_a_decision(state: ControllerState) -> None:
    for signals in (Signals(), Signals(measured_kbps=300, encoded_kbps=128)):
        decision, new_state = decide_rung(
            LADDER, state, signals, 10.0, segment_duration_s=SEGMENT_S
        )
        assert decision.bitrate_bps == LADDER[decision.index]
        assert len(new_state.window) % 8 == 0


def test_end_plans_shorten_the_horizon_to_the_segments_left() -> None:
    assert end_plan(DEFAULT_PLAN, DEFAULT_PLAN.horizon) is DEFAULT_PLAN
    assert end_plan(DEFAULT_PLAN, 40) is DEFAULT_PLAN
    assert end_plan(DEFAULT_PLAN, 0) is DEFAULT_PLAN  # nothing sensible to shorten to
    short = end_plan(DEFAULT_PLAN, 2)
    assert short == replace(DEFAULT_PLAN, horizon=2, terminal_weight=0.0)  # nothing after the end
    assert end_plan(DEFAULT_PLAN, 2) is short  # kept: a decision does not build a plan


def test_the_last_segment_is_planned_to_the_track_end() -> None:
    """At 200 kb/s with 4 s of buffer after a 256 kb/s segment, the five-segment plan
    steps down (five more 256 kb/s segments would stall); with one segment left there is
    no later segment to protect, and the plan keeps 256 kb/s."""
    window = struct.pack("<ff", 200_000.0, 0.0) * 5  # past the start's pessimism
    state = ControllerState(5, 10.0, 2, 4.0, 200_000.0, window)
    chosen = {}
    for remaining in (None, 10, 5, 2, 1):
        signals = Signals(buffer_ms=4000, delivery_rate_bps=200_000.0, remaining_segments=remaining)
        decision, _ = decide_rung(LADDER, state, signals, 16.0, segment_duration_s=SEGMENT_S)
        assert decision.throughput_bps == pytest.approx(200_000.0)
        chosen[remaining] = decision.index
    assert chosen == {None: 1, 10: 1, 5: 1, 2: 1, 1: 2}
    assert plan_first_rung(LADDER, 200_000.0, 4.0, 2, SEGMENT_S, end_plan(DEFAULT_PLAN, 1)) == 2


def test_signals_carry_the_segments_left() -> None:
    signals = signals_from_cmcd(parse_cmcd("bl=1000"), remaining_segments=7)
    assert (signals.buffer_ms, signals.remaining_segments) == (1000, 7)
    assert signals_from_cmcd(parse_cmcd("bl=1000")).remaining_segments is None


def test_a_player_that_waited_gives_its_request_gap_as_a_sample() -> None:
    """No mtp (Shaka 5.2.12 sent none in the browser tests): a gap of more than a
    segment is a player pacing a full buffer (no sample) unless its bl says it was
    waiting for the object, whose arrival the gap then times; and a socket rate far
    above that arrival is not the player's link."""
    waiting = Signals(buffer_ms=2000, encoded_kbps=320, object_ms=4000)
    paced = replace(waiting, buffer_ms=20_000)
    gap_s = 6.0  # 320 kb/s for 4 s arrived in 6 s: at least 213 kb/s
    arrival_bps = 320_000 * 4.0 / gap_s
    sample = throughput_sample_bps(LADDER, INITIAL_STATE, waiting, gap_s, 4.0)
    assert sample == pytest.approx(arrival_bps)
    assert throughput_sample_bps(LADDER, INITIAL_STATE, paced, gap_s, 4.0) is None
    socket_fast = replace(waiting, delivery_rate_bps=50e9)
    sample = throughput_sample_bps(LADDER, INITIAL_STATE, socket_fast, gap_s, 4.0)
    assert sample == pytest.approx(arrival_bps)
    near = replace(waiting, delivery_rate_bps=1.2 * arrival_bps)  # within 1.5 times: believed
    assert throughput_sample_bps(LADDER, INITIAL_STATE, near, gap_s, 4.0) == pytest.approx(
        1.2 * arrival_bps
    )
    # Not waiting: nothing to check the socket by, and it counts up to the ceiling.
    pacing_fast = replace(paced, delivery_rate_bps=50e9)
    sample = throughput_sample_bps(LADDER, INITIAL_STATE, pacing_fast, gap_s, 4.0)
    assert sample == 4 * LADDER[-1]
