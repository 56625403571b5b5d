"""The hls.js and dash.js models: each rule of docs/player-models.md on a constructed
case where it changes the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from cadenza.abr.policy import Guidance, GuidanceSource, Population, decide
from cadenza.abr.sim.dashjs import BolaPhase, DashJsDynamic, DashJsState
from cadenza.abr.sim.hlsjs import HlsJs, HlsJsState
from cadenza.abr.sim.link import link_for
from cadenza.abr.sim.session import (
    Flight,
    Measurement,
    Policy,
    PolicyInput,
    make_setup,
    simulate,
)
from cadenza.abr.sim.shaka import Shaka, choose_variant, progress_chunks
from cadenza.abr.traces import Trace

LADDER = (64_000, 128_000, 256_000, 320_000)


def constant(rate_bps: float, rtt_s: float = 0.0, seconds: int = 10) -> Trace:
    return Trace(
        f"constant-{rate_bps:g}", tuple(map(float, range(seconds))), (rate_bps,) * seconds, rtt_s
    )


def step(before_bps: float, after_bps: float, at_s: int, rtt_s: float = 0.0) -> Trace:
    rates = (before_bps,) * at_s + (after_bps,) * (200 - at_s)
    return Trace("step", tuple(map(float, range(200))), rates, rtt_s)


def policy_input(
    buffer_s: float,
    last_index: int | None,
    history: Sequence[Measurement] = (),
    chunk_index: int = 1,
    guide: Guidance | None = None,
    content_s: float = 40.0,
) -> PolicyInput:
    setup = make_setup(constant(1e6), LADDER, content_duration_s=content_s, guide=guide)
    return PolicyInput(chunk_index, buffer_s, True, last_index, tuple(history), 0.0, setup)


def hint(start: int, cap: int = 3, *, hinted: bool = True) -> Guidance:
    return Guidance(
        start, LADDER[start], cap, LADDER[cap], 1e6, 0.9, GuidanceSource.POPULATION, 0.0, hinted
    )


# hls.js


def test_hlsjs_starts_at_the_highest_rung_under_its_500_kbps_default() -> None:
    """firstAutoLevel at the 500 kb/s default: 320 kb/s on the AAC ladder, even on a slow link."""
    result = simulate(constant(100_000, 0.05), LADDER, HlsJs(), content_duration_s=8.0)
    assert result.rungs[0] == 3
    # 1.28 Mb at 100 kb/s after a 50 ms round trip.
    assert result.startup_s == pytest.approx(12.85)


def test_hlsjs_start_level_fetch_budget_excludes_rungs_above_the_estimate() -> None:
    """Only rungs at or below 500 kb/s qualify: with a 640 kb/s top rung hls.js starts at 320."""
    ladder = (64_000, 320_000, 640_000)
    result = simulate(constant(10e6), ladder, HlsJs(), content_duration_s=8.0)
    assert result.rungs[0] == 1


def test_hlsjs_sample_excludes_the_first_byte_time_but_the_download_includes_it() -> None:
    """64 kB at 1 Mb/s behind 100 ms: hls.js measures 1 Mb/s; the download took 0.612 s."""
    result = simulate(constant(1e6, 0.1), LADDER, HlsJs(), content_duration_s=8.0)
    assert result.chunks[0].download_s == pytest.approx(0.1 + 1.28)
    history = (Measurement(64_000, 0.612, 0.1),)
    policy = HlsJs()
    state = policy.start(policy_input(4.0, 1).setup)
    _, learned = policy.choose(policy_input(4.0, 1, history), state)
    assert learned.estimator.estimate_bps() == pytest.approx(1e6)
    _, naive = HlsJs(exclude_ttfb=False).choose(policy_input(4.0, 1, history), state)
    assert naive.estimator.estimate_bps() == pytest.approx(8 * 64_000 / 0.612)


def test_hlsjs_uses_the_up_factor_only_for_up_switches() -> None:
    """At 300 kb/s: up to 128 kb/s from the bottom (×0.7 = 210 kb/s), 256 kb/s held from the top."""
    history = [Measurement(150_000, 4.0)]
    policy = HlsJs()
    state = policy.start(policy_input(8.0, 0).setup)
    assert policy.choose(policy_input(8.0, 0, history), state)[0] == 1
    assert policy.choose(policy_input(8.0, 3, history), state)[0] == 2


def test_hlsjs_drops_when_the_fetch_would_outlast_the_buffer() -> None:
    """At 400 kb/s a 320 kb/s fragment takes 3.5 s: fine with 5 s of buffer, not with 1 s,
    where only 64 kb/s (0.77 s) arrives in time (findBestLevel's starvation check)."""
    history = [Measurement(200_000, 4.0)]
    policy = HlsJs()
    state: HlsJsState = policy.start(policy_input(5.0, 3).setup)
    state = HlsJsState(state.estimator, state.ttfb, 0, None, 3, visited=frozenset(range(4)))
    assert policy.choose(policy_input(5.0, 3, history), state)[0] == 3
    assert policy.choose(policy_input(1.0, 3, history), state)[0] == 0


def test_hlsjs_buffer_target_is_600_s_for_audio() -> None:
    setup = policy_input(0.0, None).setup
    assert HlsJs().request_below_s(setup, 3) == 600.0
    assert HlsJs().request_below_s(setup, 0) == 600.0


def test_hlsjs_abandons_a_fragment_when_the_link_collapses() -> None:
    """2 Mb/s, then 150 kb/s from 1.32 s, as the third 320 kb/s fragment goes out with
    7.3 s of buffer.  After 2 s of loading, finishing (6.5 s) would outlast the buffer
    (5.3 s) and 128 kb/s would fit (2 × 20 ms TTFB + 3.41 s): hls.js arms the abort
    for 3.45 s later, then refetches at 64 kb/s and stalls less than finishing would."""
    trace = Trace("drop", (0.0, 1.32, 100.0), (2e6, 150_000, 150_000), 0.02)
    with_abandon = simulate(trace, LADDER, HlsJs(), content_duration_s=12.0)
    without = simulate(trace, LADDER, HlsJs(abandon_enabled=False), content_duration_s=12.0)
    assert with_abandon.chunks[2].rung == 0
    assert with_abandon.chunks[2].abandoned_s == pytest.approx(2.1 + 3.45, abs=0.01)
    assert without.chunks[2].rung == 3
    assert with_abandon.rebuffer_s < without.rebuffer_s


def test_hlsjs_never_aborts_for_level_0() -> None:
    """At 20 kb/s nothing above 64 kb/s fits: the emergency switch names level 0,
    which hls.js applies to the next fragment without aborting this one."""
    trace = Trace("drop", (0.0, 1.32, 100.0), (2e6, 20_000, 20_000), 0.02)
    result = simulate(trace, LADDER, HlsJs(), content_duration_s=16.0)
    assert result.chunks[2].rung == 3
    assert result.chunks[2].abandoned_s == 0.0
    assert result.chunks[3].rung == 0


# dash.js


def test_dashjs_starts_at_64_kbps() -> None:
    result = simulate(constant(10e6), LADDER, DashJsDynamic(), content_duration_s=8.0)
    assert result.rungs[0] == 0


def test_dashjs_ewma_excludes_latency_and_applies_the_safety_factor() -> None:
    """One 1 Mb/s transfer behind 100 ms: the estimate is 1000 kb/s, ×0.9 = 900 kb/s → 320 kb/s;
    with the latency in, 1.28 Mb / 1.38 s = 928 kb/s."""
    policy = DashJsDynamic()
    setup = policy_input(4.0, 0).setup
    history = [Measurement(160_000, 1.38, 0.1)]
    choice, state = policy.choose(policy_input(4.0, 0, history), policy.start(setup))
    assert state.estimator.estimate_bps() == pytest.approx(1e6)
    assert choice == 3
    _, naive = DashJsDynamic(exclude_latency=False).choose(
        policy_input(4.0, 0, history), policy.start(setup)
    )
    assert naive.estimator.estimate_bps() == pytest.approx(928_000)


def test_dashjs_ewma_weights_samples_by_download_time() -> None:
    """Weight 1.5 per download second: a long slow sample outweighs a short fast one."""
    policy = DashJsDynamic()
    setup = policy_input(4.0, 0).setup
    history = [Measurement(500_000, 4.0), Measurement(125_000, 0.1)]  # 1 Mb/s then 10 Mb/s
    _, state = policy.choose(policy_input(4.0, 0, history, chunk_index=2), policy.start(setup))
    assert 1e6 < state.estimator.estimate_bps() < 2e6


def test_dashjs_insufficient_buffer_rule_caps_from_the_third_segment() -> None:
    """EWMA 400 kb/s, 4 s of 4 s segments: ThroughputRule asks 320 kb/s (360 kb/s safe),
    InsufficientBufferRule caps at 0.7 · 400 = 280 kb/s once two segments are in."""
    policy = DashJsDynamic()
    setup = policy_input(4.0, 3).setup
    history = [Measurement(200_000, 4.0)]
    assert policy.choose(policy_input(4.0, 3, history, chunk_index=1), policy.start(setup))[0] == 3
    assert policy.choose(policy_input(4.0, 3, history, chunk_index=2), policy.start(setup))[0] == 2


def test_dashjs_hands_over_to_bola_at_12_s_and_back_below_6_s() -> None:
    policy = DashJsDynamic()
    setup = policy_input(4.0, 1).setup
    history = [Measurement(2_000_000, 4.0)]
    state: DashJsState = policy.start(setup)
    _, state = policy.choose(policy_input(11.9, 1, history), state)
    assert not state.use_bola
    _, state = policy.choose(policy_input(12.0, 1, history), state)
    assert state.use_bola
    _, state = policy.choose(policy_input(6.0, 1, history), state)
    assert state.use_bola
    _, state = policy.choose(policy_input(5.9, 1, history), state)
    assert not state.use_bola


def steady_bola(policy: DashJsDynamic, now_s: float = 0.0) -> DashJsState:
    """dash.js in BOLA's STEADY phase, its last decision at 0 s, no placeholder."""
    state = policy.start(policy_input(0.0, None).setup)
    return replace(state, use_bola=True, phase=BolaPhase.STEADY, last_decision_s=now_s)


def at(
    buffer_s: float, last_index: int, history: Sequence[Measurement], now_s: float
) -> PolicyInput:
    inp = policy_input(buffer_s, last_index, history, chunk_index=2)
    return replace(inp, now_s=now_s)


def test_bola_o_keeps_an_up_switch_to_what_the_throughput_sustains() -> None:
    """At 13 s of buffer BOLA's score picks 320 kb/s; from 128 kb/s with 200 kb/s
    measured (180 kb/s safe) the BOLA-O guard holds 128 kb/s; at 2 Mb/s it lets it go."""
    policy = DashJsDynamic()
    slow = [Measurement(100_000, 4.0)]
    fast = [Measurement(1_000_000, 4.0)]
    assert policy.choose(at(13.0, 1, slow, 4.0), steady_bola(policy))[0] == 1
    assert policy.choose(at(13.0, 1, fast, 4.0), steady_bola(policy))[0] == 3


def test_bola_placeholder_grows_by_the_wait_before_a_request() -> None:
    """8 s of buffer picks 128 kb/s; after a 4 s wait since the last segment arrived the
    placeholder makes it 12 s, which picks 256 kb/s."""
    policy = DashJsDynamic()
    history = [Measurement(1_000_000, 4.0)]  # arrived at 4 s
    assert policy.choose(at(8.0, 1, history, 4.0), steady_bola(policy))[0] == 1
    choice, state = policy.choose(at(8.0, 1, history, 8.0), steady_bola(policy))
    assert choice == 2
    assert state.placeholder_s == pytest.approx(4.0)


def test_dashjs_only_switches_down_for_10_s_after_an_abandonment() -> None:
    policy = DashJsDynamic()
    history = [Measurement(1_000_000, 4.0)]
    state = policy.start(policy_input(0.0, None).setup)
    assert policy.choose(at(5.0, 1, history, 4.0), state)[0] == 3
    blocked = replace(state, down_only_until_s=10.0)
    assert policy.choose(at(5.0, 1, history, 4.0), blocked)[0] == 1
    assert policy.choose(at(5.0, 1, history, 10.0), blocked)[0] == 3


def test_dashjs_switch_history_rule() -> None:
    """One drop from the top in the last 8 checks (1/7 > 7.5 %): ask for the rung below it."""
    policy = DashJsDynamic()
    assert policy.switch_history_request([(3, 2)] + [(3, 3)] * 7, 4) == 2
    assert policy.switch_history_request([(3, 3)] * 8, 4) is None
    assert policy.switch_history_request([(3, 2)] + [(3, 3)] * 6, 4) is None  # 7 < 8 samples


def test_dashjs_buffer_targets() -> None:
    """Request while buffer + segment < 18 s below the top, 30 s at it, 60 s for long content."""
    setup = policy_input(0.0, None).setup
    assert DashJsDynamic().request_below_s(setup, 2) == 14.0
    assert DashJsDynamic().request_below_s(setup, 3) == 26.0
    long_setup = policy_input(0.0, None, content_s=600.0).setup
    assert DashJsDynamic().request_below_s(long_setup, 3) == 56.0


def test_dashjs_abandons_a_segment_that_will_take_too_long() -> None:
    """A 320 kb/s segment at 50 kb/s would take 25 s (> 1.8 × 4 s): abandoned for 64 kb/s."""
    trace = step(2e6, 50_000, 12, rtt_s=0.02)
    with_abandon = simulate(trace, LADDER, DashJsDynamic(), content_duration_s=80.0)
    without = simulate(trace, LADDER, DashJsDynamic(abandon_enabled=False), content_duration_s=80.0)
    assert any(chunk.abandoned_s > 0 for chunk in with_abandon.chunks)
    assert with_abandon.rebuffer_s < without.rebuffer_s


# Guidance channels


@pytest.mark.parametrize(
    ("policy", "unguided"),
    [(HlsJs(guided=True), HlsJs()), (DashJsDynamic(guided=True), DashJsDynamic())],
    ids=["hlsjs", "dashjs"],
)
def test_guided_players_start_where_unguided_without_a_hint(
    policy: Policy[Any], unguided: Policy[Any]
) -> None:
    trace = constant(10e6)
    plain = simulate(trace, LADDER, unguided, content_duration_s=8.0)
    no_hint = simulate(trace, LADDER, policy, content_duration_s=8.0, guide=hint(1, hinted=False))
    hinted = simulate(trace, LADDER, policy, content_duration_s=8.0, guide=hint(1))
    assert no_hint.rungs == plain.rungs
    assert hinted.rungs[0] == 1


def test_decide_hints_a_start_only_when_the_population_agrees() -> None:
    """p10 and p90 on the same side of the start rung: a hint; straddling it: none."""
    slow = Population("k", 40, 100_000, 150_000, 200_000, 300_000)
    fast = Population("k", 40, 2e6, 2.5e6, 3e6, 4e6)
    mixed = Population("k", 40, 100_000, 500_000, 1e6, 3e6)
    assert decide(list(LADDER), None, slow, 0.0).start_hint
    assert decide(list(LADDER), None, fast, 0.0).start_hint
    assert not decide(list(LADDER), None, mixed, 0.0).start_hint
    assert not decide(list(LADDER), None, None, 0.0).start_hint


# Shaka


def test_shaka_choose_variant_is_the_highest_under_95_percent_of_the_estimate() -> None:
    assert choose_variant(LADDER, 1e6) == 3  # the 1 Mb/s default: 320 kb/s
    assert choose_variant(LADDER, 300_000) == 2  # 256/0.95 = 269 kb/s fits, 320/0.95 does not
    assert choose_variant(LADDER, 50_000) == 0


def test_shaka_progress_chunks_carry_the_round_trip_in_the_first() -> None:
    """64 kB at 1 Mb/s behind 100 ms: the first report waits for 16 kB (at 0.228 s, clocked
    from the request); the last comes with the last byte at 0.612 s."""
    setup = make_setup(constant(1e6, 0.1), LADDER, content_duration_s=8.0)
    link = link_for(setup.trace)
    flight = Flight(0, 1, 64_000, 0.0, 0.612, 0.1, None, link, setup)
    chunks = progress_chunks(flight)
    assert chunks[0] == pytest.approx((0.228, 0.228, 16_000))
    assert chunks[-1][0] == pytest.approx(0.612)
    assert sum(size for _, _, size in chunks) == pytest.approx(64_000)


def test_shaka_keeps_the_default_until_128_kb_and_then_switches_at_once() -> None:
    """At 60 kb/s Shaka starts at 320 kb/s (1 Mb/s default); once 128 kB of that first
    segment are in it picks 64 kb/s, and (with nothing buffered) lets the segment finish."""
    result = simulate(constant(60_000, 0.02, seconds=100), LADDER, Shaka(), content_duration_s=12.0)
    assert result.rungs[:2] == (3, 0)
    assert result.chunks[0].abandoned_s == 0.0


def test_shaka_switches_at_most_every_8_s() -> None:
    policy = Shaka()
    state = replace(policy.start(policy_input(0.0, None).setup), bytes_sampled=2e5)
    chosen, state = policy.suggest(LADDER, 1.0, state)
    assert chosen is not None
    assert policy.suggest(LADDER, 8.9, state)[0] is None
    assert policy.suggest(LADDER, 9.0, state)[0] is not None


def test_shaka_buffering_goal() -> None:
    assert Shaka().request_below_s(policy_input(0.0, None).setup, 3) == 10.0
