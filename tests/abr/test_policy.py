"""The throughput estimator (exact numbers) and the guidance policy ``decide``."""

from __future__ import annotations

import pytest

from cadenza.abr.estimator import DualEwma, Ewma
from cadenza.abr.policy import GuidanceSource, Population, SessionView, decide, highest_at_or_below

LADDER = [64_000, 128_000, 256_000, 320_000]


def test_ewma_of_one_sample_is_that_sample() -> None:
    """The zero-bias correction makes a lone sample its own estimate."""
    assert Ewma(3.0).sample(1.0, 1000.0).value() == pytest.approx(1000.0, rel=1e-12)


def test_ewma_weights_by_duration() -> None:
    """Half-life 3 s: 1 s at 1000 then 2 s at 2000 -> 870.0394750525631 raw,
    1740.0789501051268 after dividing by 1 - 0.5 ** (3 s / 3 s) = 0.5."""
    ewma = Ewma(3.0).sample(1.0, 1000.0).sample(2.0, 2000.0)
    assert ewma.estimate == pytest.approx(870.0394750525631, rel=1e-12)
    assert ewma.value() == pytest.approx(1740.0789501051268, rel=1e-12)


def test_dual_ewma_takes_the_lower_of_fast_and_slow() -> None:
    """1 s at 1 Mb/s then 0.5 s at 0.5 Mb/s: the fast EWMA (3 s) drops further."""
    estimator = DualEwma.create().sample_download(1.0, 125_000).sample_download(0.5, 31_250)
    assert estimator.fast.value() == pytest.approx(813752.4619012282, rel=1e-12)
    assert estimator.slow.value() == pytest.approx(826875.713731544, rel=1e-12)
    assert estimator.estimate_bps() == estimator.fast.value()


def test_dual_ewma_default_before_any_sample() -> None:
    assert DualEwma.create().estimate_bps() == 500_000.0


def test_tiny_durations_are_clamped() -> None:
    """A 1 ms 'download' of 1000 bytes counts as 50 ms: 160 kb/s, not 8 Mb/s."""
    assert DualEwma.create().sample_download(0.001, 1000).estimate_bps() == pytest.approx(160_000)


def test_confidence_is_half_after_four_seconds_of_samples() -> None:
    estimator = DualEwma.create().sample_rate(1e6, 4.0)
    assert estimator.confidence() == pytest.approx(0.5)


def test_non_positive_rates_are_ignored() -> None:
    estimator = DualEwma.create()
    assert estimator.sample_rate(0.0, 1.0) == estimator
    assert estimator.sample_rate(float("nan"), 1.0) == estimator


def test_highest_at_or_below_falls_back_to_the_lowest_rung() -> None:
    assert highest_at_or_below(LADDER, 10_000) == 0
    assert highest_at_or_below(LADDER, 300_000) == 2


def _session(
    rate_bps: float, weight_s: float, now_s: float = 100.0, stalls: int = 0
) -> SessionView:
    return SessionView(DualEwma.create().sample_rate(rate_bps, weight_s), now_s, stalls)


def _population(p25_bps: float, sessions: int = 40) -> Population:
    return Population("net:x", sessions, p25_bps * 0.8, p25_bps, p25_bps * 1.2, p25_bps * 1.5)


def test_unknown_session_without_prior_gets_the_default() -> None:
    guidance = decide(LADDER, None, None, 0.0)
    assert guidance.source is GuidanceSource.DEFAULT
    # Knowing nothing changes nothing: the lowest rung first, as packaged, and no cap.
    assert (guidance.start_bitrate_bps, guidance.max_bitrate_bps) == (64_000, 320_000)


def test_slow_population_starts_new_sessions_low() -> None:
    guidance = decide(LADDER, None, _population(150_000), 0.0)
    assert guidance.source is GuidanceSource.POPULATION
    assert guidance.start_bitrate_bps == 64_000


def test_fast_population_starts_new_sessions_high() -> None:
    guidance = decide(LADDER, None, _population(2_000_000), 0.0)
    assert guidance.start_bitrate_bps == 320_000


def test_small_population_is_not_trusted() -> None:
    guidance = decide(LADDER, None, _population(150_000, sessions=2), 0.0)
    assert guidance.source is GuidanceSource.DEFAULT


def test_confident_slow_session_is_capped() -> None:
    guidance = decide(LADDER, _session(80_000, 30.0), None, 100.0)
    assert guidance.source is GuidanceSource.SESSION
    assert guidance.start_bitrate_bps == 64_000
    assert guidance.max_bitrate_bps == 128_000  # 80 kb/s x 2.5 headroom = 200 kb/s


def test_stale_session_falls_back_to_the_prior() -> None:
    guidance = decide(LADDER, _session(80_000, 30.0, now_s=0.0), _population(2_000_000), 1000.0)
    assert guidance.source is GuidanceSource.POPULATION


def test_stalls_lower_the_estimate() -> None:
    calm = decide(LADDER, _session(300_000, 30.0), None, 100.0)
    stalled = decide(LADDER, _session(300_000, 30.0, stalls=2), None, 100.0)
    assert stalled.estimate_bps == pytest.approx(calm.estimate_bps * 0.8)


def test_decide_is_pure() -> None:
    session = _session(200_000, 10.0)
    population = _population(300_000)
    assert decide(LADDER, session, population, 100.0) == decide(LADDER, session, population, 100.0)


def test_unsorted_ladder_is_refused() -> None:
    with pytest.raises(ValueError, match="ascending"):
        decide([128_000, 64_000], None, None, 0.0)
