"""The trace-driven ABR simulator: the download model, QoE, the policies, and
whether the origin's guidance helps the players that honour it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cadenza.abr.policy import Guidance, GuidanceSource
from cadenza.abr.sim.baselines import (
    Bba,
    FixedPlan,
    MpcState,
    RobustMpc,
    bba_choice,
    harmonic_mean_bps,
    relative_error,
    robust_throughput_bps,
)
from cadenza.abr.sim.evaluation import (
    DEFAULT_AUDIO_LADDER_BPS,
    evaluate,
    leave_one_out_guidance,
    population_from_traces,
    run_evaluation,
)
from cadenza.abr.sim.link import download_time_s
from cadenza.abr.sim.optimum import OfflineOptimal, optimal_plan
from cadenza.abr.sim.players import DashJsDynamic, HlsJs, Shaka, bola_choice, bola_params
from cadenza.abr.sim.qoe import (
    QOE_TOLERANCE,
    average_bitrate_kbps,
    perceptual_quality,
    qoe_lin,
    qoe_perceptual,
    rebuffer_ratio,
    switches_per_min,
)
from cadenza.abr.sim.session import (
    ChunkRecord,
    Measurement,
    Policy,
    PolicyInput,
    SessionResult,
    make_setup,
    simulate,
)
from cadenza.abr.traces import Trace, scale_trace
from cadenza.abr_io import read_trace_folder

TRACES = Path(__file__).resolve().parents[2] / "samples" / "traces"
LADDER = DEFAULT_AUDIO_LADDER_BPS
# Shorter sessions than the default 180 s keep the suite fast.
CONTENT_S = 120.0


def constant_trace(rate_bps: float, rtt_s: float = 0.0, seconds: int = 10) -> Trace:
    return Trace(
        name=f"constant-{rate_bps:g}",
        times_s=tuple(float(t) for t in range(seconds)),
        throughput_bps=(rate_bps,) * seconds,
        rtt_s=rtt_s,
    )


@cache
def trace_set(name: str) -> tuple[Trace, ...]:
    """One of the eight evaluation sets by name."""
    base, _, factor = name.partition("x")
    folder = TRACES / "synthetic" / base
    if not folder.is_dir():
        folder = TRACES / base
    traces = read_trace_folder(folder)
    if factor:
        traces = [scale_trace(trace, float(factor)) for trace in traces]
    return tuple(traces)


def guided(name: str, trace_name: str) -> Guidance:
    """The leave-one-out session-start guidance for one trace of a set."""
    traces = trace_set(name)
    guidance = leave_one_out_guidance(traces, LADDER, key=name)
    return guidance[[trace.name for trace in traces].index(trace_name)]


def result_of(rungs: Sequence[int], startup_s: float, rebuffer_s: float) -> SessionResult:
    chunks = tuple(
        ChunkRecord(
            index=i,
            rung=rung,
            bitrate_bps=LADDER[rung],
            size_bytes=LADDER[rung] // 2,
            request_s=0.0,
            download_s=1.0,
            throughput_bps=1.0,
            buffer_before_s=0.0,
            stall_s=0.0,
            wait_s=0.0,
        )
        for i, rung in enumerate(rungs)
    )
    return SessionResult("hand-made", "fixed", LADDER, 4.0, chunks, startup_s, rebuffer_s)


def policy_input(
    buffer_s: float,
    last_index: int | None,
    history: Sequence[Measurement] = (),
    chunk_index: int = 1,
    guide: Guidance | None = None,
) -> PolicyInput:
    setup = make_setup(constant_trace(1e6), LADDER, content_duration_s=40.0, guide=guide)
    return PolicyInput(
        chunk_index=chunk_index,
        buffer_s=buffer_s,
        playing=True,
        last_index=last_index,
        history=tuple(history),
        now_s=0.0,
        setup=setup,
    )


def test_download_time_on_constant_trace_is_exact() -> None:
    """128 kb/s × 4 s = 64000 bytes at 1 Mb/s takes 0.512 s plus one RTT."""
    trace = constant_trace(1e6, rtt_s=0.08)
    assert download_time_s(trace, 0.0, 64_000) == pytest.approx(0.512 + 0.08, abs=1e-12)
    assert download_time_s(trace, 3.7, 64_000) == pytest.approx(0.592, abs=1e-12)


def test_download_time_integrates_across_samples_and_loops() -> None:
    """1 Mb at 1 Mb/s for 1 s, then nothing for 1 s; the trace loops for the second Mb."""
    trace = Trace("on-off", (0.0, 1.0), (1e6, 0.0), rtt_s=0.0)
    assert download_time_s(trace, 0.0, 125_000) == pytest.approx(1.0)
    assert download_time_s(trace, 0.0, 250_000) == pytest.approx(3.0)
    assert download_time_s(trace, 0.5, 125_000) == pytest.approx(2.0)


def test_stalls_are_counted_when_throughput_is_below_the_lowest_rung() -> None:
    """At 32 kb/s a 64 kb/s chunk takes 8 s + RTT; each later chunk stalls 4 s + RTT."""
    trace = constant_trace(32_000, rtt_s=0.1)
    result = simulate(trace, LADDER, FixedPlan((0,)), content_duration_s=40.0)
    assert result.startup_s == pytest.approx(8.1)
    assert result.rebuffer_s == pytest.approx(9 * 4.1)
    assert [chunk.stall_s for chunk in result.chunks[1:]] == pytest.approx([4.1] * 9)


def test_no_stall_and_buffer_capped_when_throughput_is_ample() -> None:
    """Fast links fill the buffer to the cap and then wait; nothing stalls."""
    result = simulate(constant_trace(10e6, 0.02), LADDER, FixedPlan((3,)), content_duration_s=80.0)
    assert result.rebuffer_s == 0.0
    assert max(chunk.buffer_before_s for chunk in result.chunks) == pytest.approx(30.0)
    assert sum(chunk.wait_s for chunk in result.chunks) > 0.0


def test_startup_waits_for_the_threshold() -> None:
    """With a 12 s threshold playback starts when the third 4 s chunk has arrived."""
    trace = constant_trace(1e6, rtt_s=0.0)
    result = simulate(trace, LADDER, FixedPlan((1,)), startup_threshold_s=12.0)
    assert result.startup_s == pytest.approx(3 * 0.512)
    assert result.rebuffer_s == 0.0


def test_qoe_lin_is_exact_on_a_hand_made_session() -> None:
    """Rungs 64/256/128 kb/s, 1 s startup, 0.5 s stall: 0.448 − 0.32·1.5 − 0.32 = −0.352."""
    assert qoe_lin(result_of((0, 2, 1), 1.0, 0.5)) == pytest.approx(-0.352, abs=1e-12)


def test_qoe_perceptual_uses_the_saturating_utility() -> None:
    """Utility 1 − exp(−R/64 kb/s) per chunk, μ_p = 1 per second of startup or stall."""
    q = [1 - math.exp(-1.0), 1 - math.exp(-4.0), 1 - math.exp(-2.0)]
    expected = sum(q) - 1.5 - (abs(q[1] - q[0]) + abs(q[2] - q[1]))
    assert qoe_perceptual(result_of((0, 2, 1), 1.0, 0.5)) == pytest.approx(expected, abs=1e-12)
    assert perceptual_quality(128_000) == pytest.approx(1 - math.exp(-2.0))


def test_session_metrics() -> None:
    """Average bitrate, rebuffer ratio (stall over media time) and switches per minute."""
    result = result_of((0, 2, 1), 1.0, 0.6)
    assert average_bitrate_kbps(result) == pytest.approx(448 / 3)
    assert rebuffer_ratio(result) == pytest.approx(0.6 / 12.0)
    assert switches_per_min(result) == pytest.approx(2 / 0.2)


@pytest.mark.parametrize(
    ("buffer_s", "last_index", "expected"),
    [
        (0.0, 3, 0),  # empty buffer
        (5.0, 3, 0),  # at the reservoir
        (5.001, 0, 0),  # just above it the map is still below the next rung
        (27.0, 0, 3),  # at the top of the cushion
        (29.0, 1, 3),  # above it
        (16.0, 1, 1),  # f(B) = 192 kb/s lies between 128 and 256: keep the rung
        (16.0, 0, 1),  # f(B) passed the next rung up: highest below f(B)
        (16.0, 3, 2),  # f(B) fell to the next rung down: lowest above f(B)
    ],
)
def test_bba_choices_at_reservoir_and_cushion_edges(
    buffer_s: float, last_index: int, expected: int
) -> None:
    """BBA-0 with a 5 s reservoir and a cushion up to 27 s (0.9 × 30 s)."""
    assert bba_choice(LADDER, buffer_s, last_index, 5.0, 27.0) == expected


def test_bba_policy_uses_the_buffer_cap_for_its_cushion() -> None:
    """The policy's cushion ends at 0.9 × the session's buffer cap."""
    assert Bba().choose(policy_input(27.0, 0), None)[0] == 3
    assert Bba().choose(policy_input(26.9, 0), None)[0] == 2


def test_robust_mpc_prediction_arithmetic() -> None:
    """Harmonic mean of the last five samples ÷ (1 + the largest of the last five errors)."""
    samples = [9e6, 1e6, 2e6, 4e6, 1e6, 2e6]
    assert harmonic_mean_bps(samples[-3:]) == pytest.approx(3 / (1e-6 + 0.5e-6 + 0.25e-6))
    errors = [0.9, 0.1, 0.25, 0.05, 0.0, 0.2]
    expected = 5 / (1e-6 + 0.5e-6 + 0.25e-6 + 1e-6 + 0.5e-6) / 1.25
    assert robust_throughput_bps(samples, errors) == pytest.approx(expected)
    assert relative_error(1.5e6, 1e6) == pytest.approx(0.5)


def test_robust_mpc_records_its_prediction_errors() -> None:
    """Each step stores the harmonic mean and the error of the previous one."""
    history = [Measurement(64_000, 0.512), Measurement(64_000, 1.024)]
    policy = RobustMpc()
    _, state = policy.choose(policy_input(4.0, 0, history[:1]), MpcState())
    assert state == MpcState(1e6, (0.0,))
    _, state = policy.choose(policy_input(4.0, 0, history, chunk_index=2), state)
    assert state.errors == pytest.approx((0.0, 1.0))
    assert state.last_prediction_bps == pytest.approx(2 / (1e-6 + 2e-6))


def test_hlsjs_climbs_with_the_up_factor_and_holds_with_the_down_factor() -> None:
    """At 300 kb/s: up to 128 kb/s from the bottom (×0.7), 256 kb/s from the top (×0.95)."""
    history = [Measurement(37_500, 1.0)]
    policy = HlsJs()
    setup = policy_input(4.0, 0, history).setup
    assert policy.choose(policy_input(4.0, 0, history), policy.start(setup))[0] == 1
    assert policy.choose(policy_input(4.0, 3, history), policy.start(setup))[0] == 2


def test_dashjs_starts_at_the_highest_rung_under_100_kbps() -> None:
    """dash.js's default initial audio bitrate (100 kb/s) picks the 64 kb/s rung."""
    result = simulate(constant_trace(10e6), LADDER, DashJsDynamic(), content_duration_s=8.0)
    assert result.rungs[0] == 0


def test_bola_thresholds_with_the_minus_one() -> None:
    """dash.js 5.2.1's BOLA (bufferTime 18 s, score with u − 1): up to 128 kb/s at
    6.6 s, 256 kb/s at 10.0 s and 320 kb/s at 12.5 s of buffer (docs/player-models.md 2.3)."""
    params = bola_params(LADDER)
    assert [bola_choice(LADDER, q, params) for q in (6.5, 6.7, 9.9, 10.1, 12.4, 12.6)] == [
        0,
        1,
        1,
        2,
        2,
        3,
    ]


def test_offline_optimal_matches_exhaustive_search() -> None:
    """On a 5-chunk session the DP finds the best of all 4^5 rung sequences."""
    trace = trace_set("3g")[1]
    setup = make_setup(trace, LADDER, content_duration_s=20.0)
    best = max(
        qoe_lin(simulate(trace, LADDER, FixedPlan(plan), content_duration_s=20.0))
        for plan in itertools.product(range(len(LADDER)), repeat=setup.chunk_count)
    )
    planned = simulate(trace, LADDER, FixedPlan(optimal_plan(setup)), content_duration_s=20.0)
    assert qoe_lin(planned) == pytest.approx(best, abs=1e-12)


OPTIMUM_CASES = [
    ("3g", 0),
    ("3g", 2),
    ("wifi", 1),
    ("fibre", 0),
    ("satellite", 3),
    ("norway-3g", 0),
    ("norway-3gx0.2", 5),
    ("fcc", 16),
    ("fccx0.2", 2),
    ("fccx0.2", 9),
]


@pytest.mark.parametrize(("set_name", "index"), OPTIMUM_CASES)
def test_offline_optimal_is_never_beaten(set_name: str, index: int) -> None:
    """No policy scores a higher QoE_lin than the offline optimum on the same trace."""
    trace = trace_set(set_name)[index]
    guide = guided(set_name, trace.name)
    policies: list[Policy[Any]] = [
        HlsJs(),
        HlsJs(guided=True),
        DashJsDynamic(),
        DashJsDynamic(guided=True),
        Shaka(),
        Bba(),
        RobustMpc(),
    ]
    best = qoe_lin(simulate(trace, LADDER, OfflineOptimal(), content_duration_s=CONTENT_S))
    for policy in policies:
        score = qoe_lin(simulate(trace, LADDER, policy, content_duration_s=CONTENT_S, guide=guide))
        assert best >= score - QOE_TOLERANCE * max(1.0, abs(score)), policy.name


GUIDED_CLIENTS: list[Policy[Any]] = [HlsJs(guided=True), DashJsDynamic(guided=True)]


@pytest.mark.parametrize("policy", GUIDED_CLIENTS, ids=lambda policy: str(policy.name))
def test_guided_clients_start_on_guidance_and_never_exceed_the_cap(policy: Policy[Any]) -> None:
    """Start rung 0 and cap rung 2 on a fast link: the client climbs to the cap, never past."""
    guide = Guidance(0, LADDER[0], 2, LADDER[2], 5e6, 0.9, GuidanceSource.POPULATION)
    result = simulate(constant_trace(20e6, 0.02), LADDER, policy, guide=guide)
    assert result.rungs[0] == 0
    assert max(result.rungs) == 2


@pytest.mark.parametrize("policy", GUIDED_CLIENTS, ids=lambda policy: str(policy.name))
def test_guided_clients_stay_under_the_cap_on_real_traces(policy: Policy[Any]) -> None:
    """Capped at rung 2 on varied real traces (Norway ×0.2), no chunk is above the cap."""
    for trace in trace_set("norway-3gx0.2")[:6]:
        guide = Guidance(1, LADDER[1], 2, LADDER[2], 3e5, 0.6, GuidanceSource.POPULATION)
        result = simulate(trace, LADDER, policy, content_duration_s=CONTENT_S, guide=guide)
        assert max(result.rungs) <= guide.max_index, trace.name


def test_population_from_traces_takes_percentiles_of_first_minute_means() -> None:
    """Each trace contributes its mean over the first 60 s."""
    traces = [constant_trace(rate, seconds=120) for rate in (1e5, 2e5, 3e5, 4e5, 5e5)]
    population = population_from_traces(traces, "k")
    assert population.sessions == 5
    assert population.p10_bps == pytest.approx(1.4e5)
    assert population.p25_bps == pytest.approx(2e5)
    assert population.p50_bps == pytest.approx(3e5)
    assert population.p90_bps == pytest.approx(4.6e5)


def test_evaluate_reports_means_per_policy() -> None:
    """The JSON shape: trace count and, per policy, the six means."""
    report = evaluate(
        list(trace_set("wifi")[:2]), LADDER, [HlsJs(), Bba()], content_duration_s=40.0
    )
    assert report["traces"] == 2
    policies = report["policies"]
    assert isinstance(policies, dict)
    assert set(policies) == {"hlsjs", "bba"}
    assert set(policies["bba"]) == {
        "qoe",
        "qoe_perceptual",
        "bitrate_kbps",
        "rebuffer_ratio",
        "switches_per_min",
        "startup_s",
    }


SCENARIO_SETS = [
    "3g",
    "wifi",
    "fibre",
    "satellite",
    "norway-3g",
    "fcc",
    "norway-3gx0.2",
    "fccx0.2",
]


@cache
def guided_vs_unguided(set_name: str) -> dict[str, float]:
    """Mean QoE_lin of the hls.js/dash.js clients, guided and not, and of the
    offline optimum, over one set (leave-one-out population priors)."""
    evaluation = run_evaluation(
        trace_set(set_name),
        LADDER,
        [
            HlsJs(),
            HlsJs(guided=True),
            DashJsDynamic(),
            DashJsDynamic(guided=True),
            OfflineOptimal(),
        ],
        key=set_name,
        content_duration_s=CONTENT_S,
    )
    return {name: summary.qoe for name, summary in evaluation.summaries().items()}


CLIENT_PAIRS = [("hlsjs", "hlsjs+cadenza"), ("dashjs-dynamic", "dashjs+cadenza")]


@pytest.mark.parametrize(
    ("set_name", "unguided", "with_guidance"),
    [
        # dash.js starts at 64 kb/s: a start hint helps where the audience is fast.
        ("fibre", "dashjs-dynamic", "dashjs+cadenza"),
        ("norway-3g", "dashjs-dynamic", "dashjs+cadenza"),
        # hls.js starts at 320 kb/s: a start hint helps where the audience is slow.
        ("3g", "hlsjs", "hlsjs+cadenza"),
        ("satellite", "hlsjs", "hlsjs+cadenza"),
        ("norway-3gx0.2", "hlsjs", "hlsjs+cadenza"),
        ("fccx0.2", "hlsjs", "hlsjs+cadenza"),
    ],
)
def test_guidance_raises_qoe_where_the_start_hint_differs_from_the_players_own(
    set_name: str, unguided: str, with_guidance: str
) -> None:
    """Where a whole audience is on one side of a player's own start rung, the
    population prior's start hint moves a new session to the right side: QoE_lin rises."""
    qoe = guided_vs_unguided(set_name)
    assert qoe[with_guidance] > qoe[unguided], qoe


@pytest.mark.parametrize("set_name", SCENARIO_SETS)
@pytest.mark.parametrize(("unguided", "with_guidance"), CLIENT_PAIRS)
def test_guidance_never_costs_qoe(set_name: str, unguided: str, with_guidance: str) -> None:
    """On mixed audiences the prior gives no start hint (its 10th and 90th
    percentiles disagree), so the player starts as it would unguided: a guided
    player never scores below its unguided self on any bundled set."""
    qoe = guided_vs_unguided(set_name)
    assert qoe[with_guidance] >= qoe[unguided] - QOE_TOLERANCE * abs(qoe[unguided]), qoe
