"""Adaptive delivery (``origin-adaptive``, cadenza.abr.delivery) against the origin's
other deliveries and robust MPC over the bundled sets: policy against policy on the
same traces, never against a stored number (the report's figures are in
docs/abr-results.md)."""

from __future__ import annotations

from functools import cache

import pytest

from cadenza.abr.delivery import DeliveryRule
from cadenza.abr.sim.baselines import RobustMpc
from cadenza.abr.sim.evaluation import DEFAULT_AUDIO_LADDER_BPS, run_evaluation
from cadenza.abr.sim.origin import ORIGIN_ADAPTIVE, OriginAdaptive, OriginDecided
from cadenza.abr.sim.session import SessionResult
from tests.abr.test_sim import trace_set

CONTENT_S = 180.0
ALL_SETS = ["3g", "wifi", "fibre", "satellite", "norway-3g", "fcc", "norway-3gx0.2", "fccx0.2"]
# Where the links have room above the ladder: most segments keep the CDN.
EASY_SETS = ["wifi", "fibre", "norway-3g", "fcc"]
# Where the redirect's round trip costs the redirected origin QoE.
HARD_SETS = ["satellite", "norway-3gx0.2", "fccx0.2"]


@cache
def compared(set_name: str) -> tuple[dict[str, float], float]:
    """QoE_lin per policy, and the share of origin-adaptive's segments it served itself."""
    evaluation = run_evaluation(
        trace_set(set_name),
        DEFAULT_AUDIO_LADDER_BPS,
        [RobustMpc(), OriginDecided(), OriginDecided(redirect=False), OriginAdaptive()],
        content_duration_s=CONTENT_S,
    )
    qoe = {name: summary.qoe for name, summary in evaluation.summaries().items()}
    return qoe, served_share(evaluation.sessions[ORIGIN_ADAPTIVE])


def served_share(results: tuple[SessionResult, ...]) -> float:
    """A redirected segment is charged its redirect's round trip before the request."""
    chunks = [c for r in results for c in r.chunks]
    return sum(1 for c in chunks if c.abandoned_s == 0) / len(chunks)


@pytest.mark.parametrize("set_name", ALL_SETS)
def test_adaptive_delivery_scores_at_least_robust_mpc(set_name: str) -> None:
    qoe, _ = compared(set_name)
    assert qoe[ORIGIN_ADAPTIVE] >= qoe["robust-mpc"], qoe


@pytest.mark.parametrize("set_name", HARD_SETS)
def test_on_slow_links_adaptive_delivery_beats_the_redirect(set_name: str) -> None:
    qoe, served = compared(set_name)
    assert qoe[ORIGIN_ADAPTIVE] > qoe["origin"], qoe
    assert served > 0.5


@pytest.mark.parametrize("set_name", EASY_SETS)
def test_on_fast_links_adaptive_delivery_keeps_most_segments_on_the_cdn(set_name: str) -> None:
    qoe, served = compared(set_name)
    assert served < 0.5, served
    assert qoe[ORIGIN_ADAPTIVE] >= qoe["origin"], qoe


def test_always_redirecting_adaptive_delivery_is_the_redirected_origin() -> None:
    """The simulator's per-segment redirect (a round trip before the real request)
    charges what the redirected origin's doubled RTT charges."""
    never_served = OriginAdaptive(rule=DeliveryRule(headroom=0.0, startup=False))
    evaluation = run_evaluation(
        trace_set("fccx0.2"),
        DEFAULT_AUDIO_LADDER_BPS,
        [OriginDecided(), never_served],
        content_duration_s=CONTENT_S,
    )
    qoe = {name: summary.qoe for name, summary in evaluation.summaries().items()}
    assert qoe[ORIGIN_ADAPTIVE] == pytest.approx(qoe["origin"], rel=1e-9)
    assert served_share(evaluation.sessions[ORIGIN_ADAPTIVE]) == 0.0
