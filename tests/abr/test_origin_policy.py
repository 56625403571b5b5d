"""The simulator's ``origin`` policy: the origin's controller deciding each segment,
on only what the origin would know at that moment."""

from __future__ import annotations

import pytest

from cadenza.abr.controller import decide_rung
from cadenza.abr.sim.evaluation import DEFAULT_AUDIO_LADDER_BPS, default_policies, run_evaluation
from cadenza.abr.sim.optimum import OfflineOptimal
from cadenza.abr.sim.origin import OriginDecided, OriginPlayerState, round_to, session_trace
from cadenza.abr.sim.session import Measurement, PolicyInput, make_setup, simulate
from cadenza.abr.traces import Trace
from tests.abr.test_sim import trace_set

LADDER = DEFAULT_AUDIO_LADDER_BPS


def stepped(*steps: tuple[int, float], rtt_s: float = 0.05) -> Trace:
    """Whole seconds at the given rates: ``(seconds, bit/s)`` pairs in order."""
    times: list[float] = []
    rates: list[float] = []
    for seconds, rate in steps:
        for _ in range(seconds):
            times.append(float(len(times)))
            rates.append(rate)
    return Trace("stepped", tuple(times), tuple(rates), rtt_s)


@pytest.mark.parametrize("redirect", [True, False])
def test_decisions_never_depend_on_future_throughput(redirect: bool) -> None:
    """Two traces alike for 60 s, then one collapses.  The offline optimum, which
    sees the future, plays the first minute differently; the origin cannot."""
    collapse_s = 60
    good = stepped((collapse_s, 400e3), (240, 400e3))
    bad = stepped((collapse_s, 400e3), (240, 50e3))
    policy = OriginDecided(redirect=redirect)
    runs = [simulate(policy.session_trace(t), LADDER, policy) for t in (good, bad)]
    before = [c.index for c in runs[0].chunks if c.request_s + c.download_s < collapse_s]
    assert len(before) > 5
    for index in before:
        assert runs[0].chunks[index] == runs[1].chunks[index]
    plans = [simulate(t, LADDER, OfflineOptimal()).rungs for t in (good, bad)]
    assert plans[0][: len(before)] != plans[1][: len(before)]


def test_redirect_costs_one_round_trip_per_segment() -> None:
    trace = stepped((30, 1e6), rtt_s=0.2)
    served = simulate(trace, LADDER, OriginDecided(redirect=False), content_duration_s=40.0)
    redirected = simulate(session_trace(trace, 1), LADDER, OriginDecided(), content_duration_s=40.0)
    for chunk in redirected.chunks:
        transfer_s = 8.0 * chunk.size_bytes / 1e6
        assert chunk.download_s == pytest.approx(transfer_s + 2 * 0.2)
    assert served.chunks[0].download_s == pytest.approx(
        8.0 * served.chunks[0].size_bytes / 1e6 + 0.2
    )


def policy_input(history: tuple[Measurement, ...], buffer_s: float, playing: bool) -> PolicyInput:
    setup = make_setup(stepped((10, 1e6), rtt_s=0.1), LADDER, content_duration_s=40.0)
    return PolicyInput(
        chunk_index=len(history),
        buffer_s=buffer_s,
        playing=playing,
        last_index=1 if history else None,
        history=history,
        now_s=3.0,
        setup=setup,
    )


def test_the_request_carries_the_cmcd_a_player_sends() -> None:
    """``mtp`` rounded to 100 kb/s, ``bl`` to 100 ms, ``br``/``d`` of the previous object."""
    last = Measurement(size_bytes=64_000, download_s=0.5)  # 1.024 Mb/s
    inp = policy_input((last,), buffer_s=7.46, playing=True)
    signals = OriginDecided().signals(inp, OriginPlayerState(None, 10.0, True))
    assert (signals.measured_kbps, signals.buffer_ms) == (1000, 7500)
    assert (signals.encoded_kbps, signals.object_ms) == (128, 4000)
    assert not signals.startup
    assert not signals.starved
    assert signals.delivery_rate_bps is None
    first = OriginDecided().signals(policy_input((), 0.0, False), OriginPlayerState())
    assert first.startup
    assert first.measured_kbps is None


def test_the_request_tells_how_many_segments_are_left() -> None:
    """The origin knows the track's segments and which one is asked for: the requested
    one and those after it (40 s of 4 s segments: ten), with or without CMCD."""
    last = Measurement(size_bytes=64_000, download_s=0.5)
    for cmcd in (True, False):
        player = OriginDecided(cmcd=cmcd)
        assert (
            player.signals(policy_input((), 0.0, False), OriginPlayerState()).remaining_segments
            == 10
        )
        inp = policy_input((last,) * 9, buffer_s=7.0, playing=True)
        assert player.signals(inp, OriginPlayerState()).remaining_segments == 1


def test_served_mode_knows_the_delivery_rate_and_notes_a_stall() -> None:
    last = Measurement(size_bytes=64_000, download_s=0.6)
    inp = policy_input((last,), buffer_s=2.0, playing=True)
    signals = OriginDecided(redirect=False).signals(inp, OriginPlayerState(None, 0.4, True))
    # 512 kbit over the 0.5 s after the 0.1 s round trip.
    assert signals.delivery_rate_bps == pytest.approx(1.024e6)
    assert signals.starved


def test_policy_plays_exactly_the_controllers_decisions() -> None:
    """Replaying the policy's own signals through the controller gives its rungs."""
    trace = trace_set("fccx0.2")[3]
    policy = OriginDecided()
    result = simulate(policy.session_trace(trace), LADDER, policy, content_duration_s=60.0)
    setup = make_setup(policy.session_trace(trace), LADDER, content_duration_s=60.0)
    player = policy.start(setup)
    controller = None
    history: list[Measurement] = []
    for chunk in result.chunks:
        inp = PolicyInput(
            chunk_index=chunk.index,
            buffer_s=chunk.buffer_before_s,
            playing=chunk.index >= setup.start_chunks,
            last_index=result.chunks[chunk.index - 1].rung if chunk.index else None,
            history=tuple(history),
            now_s=chunk.request_s,
            setup=setup,
        )
        decision, controller = decide_rung(
            LADDER, controller, policy.signals(inp, player), inp.now_s, segment_duration_s=4.0
        )
        assert decision.index == chunk.rung
        player = OriginPlayerState(controller, inp.buffer_s, inp.playing)
        history.append(Measurement(chunk.size_bytes, chunk.download_s))


def test_origin_policies_are_reported_and_never_beat_the_optimum() -> None:
    names = [policy.name for policy in default_policies()]
    assert {"origin", "origin-served"} <= set(names)
    evaluation = run_evaluation(
        trace_set("3g"),
        LADDER,
        [OriginDecided(), OriginDecided(redirect=False), OfflineOptimal()],
        content_duration_s=60.0,
    )
    summaries = evaluation.summaries()
    assert summaries["origin"].qoe <= summaries["offline-optimal"].qoe + 1e-9
    assert summaries["origin-served"].qoe <= summaries["offline-optimal"].qoe + 1e-9


def test_cmcd_rounding_is_half_up() -> None:
    assert [round_to(v, 100) for v in (49.9, 50.0, 149.0, 1049.0)] == [0, 100, 100, 1000]


def test_evaluation_gives_the_origin_the_sessions_population_prior() -> None:
    """On fibre the other sessions' prior starts the origin above the lowest rung;
    alone (no prior), it starts on the lowest."""
    traces = trace_set("fibre")
    evaluation = run_evaluation(traces, LADDER, [OriginDecided()], content_duration_s=20.0)
    assert all(result.rungs[0] > 0 for result in evaluation.sessions["origin"])
    alone = simulate(session_trace(traces[0], 1), LADDER, OriginDecided(), content_duration_s=20.0)
    assert alone.rungs[0] == 0
