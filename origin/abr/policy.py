"""The steering policy: what the origin tells one session.

``decide`` is a pure function.  It is given the ladder, what is known of the
session, what is known of sessions like it (the population prior) and the
time, and returns a :class:`Guidance`.  The HTTP edge turns guidance into the
channels players really honour: the order and cap of variants in a
per-session manifest (hls.js starts on the first variant listed; dash.js and
Shaka never see representations above the cap) and ``CMSD-Dynamic: etp``
(dash.js blends it into its throughput estimate).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from origin.abr.estimator import DEFAULT_ESTIMATE_BPS, DualEwma


class GuidanceSource(enum.StrEnum):
    SESSION = "session"
    POPULATION = "population"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the policy needs from one session's state."""

    estimator: DualEwma
    last_seen_s: float
    stalls: int = 0
    last_buffer_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Population:
    """Throughput of sessions that share a coarse key (network type, /24 or /48).

    Percentiles are of per-session estimates, in bit/s.
    """

    key: str
    sessions: int
    p10_bps: float
    p25_bps: float
    p50_bps: float
    p90_bps: float


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    # A session estimate older than this is treated as unknown.
    stale_after_s: float = 120.0
    # Population priors need this many sessions behind them.
    min_population_sessions: int = 5
    # Start below the estimate: by this factor at full confidence, more at less.
    start_safety_confident: float = 0.85
    start_safety_unsure: float = 0.55
    # The cap leaves room to climb: rungs up to this multiple of the estimate.
    cap_headroom: float = 2.5
    # Below this confidence the cap is the top of the ladder.
    min_cap_confidence: float = 0.5
    default_bps: float = DEFAULT_ESTIMATE_BPS


DEFAULT_POLICY: Final = PolicyConfig()


@dataclass(frozen=True, slots=True)
class Guidance:
    start_index: int
    start_bitrate_bps: int
    max_index: int
    max_bitrate_bps: int
    estimate_bps: float
    confidence: float
    source: GuidanceSource

    def to_dict(self) -> dict[str, object]:
        return {
            "start_bitrate_bps": self.start_bitrate_bps,
            "max_bitrate_bps": self.max_bitrate_bps,
            "estimate_bps": round(self.estimate_bps),
            "confidence": round(self.confidence, 3),
            "source": self.source.value,
        }


def highest_at_or_below(ladder_bps: Sequence[int], rate_bps: float) -> int:
    """Index of the highest rung not above ``rate_bps``; the lowest when none is."""
    chosen = 0
    for index, bitrate in enumerate(ladder_bps):
        if bitrate <= rate_bps:
            chosen = index
    return chosen


def decide(
    ladder_bps: Sequence[int],
    session: SessionView | None,
    population: Population | None,
    now_s: float,
    config: PolicyConfig = DEFAULT_POLICY,
) -> Guidance:
    """Start rung, bitrate cap and throughput estimate for one session.

    ``ladder_bps`` is the ladder's bitrates in ascending order.  The session's
    own measurements win once they carry weight; until then the population
    prior (its 25th percentile, so most of that population can sustain the
    start) stands in; without either, a fixed default as players use.
    """
    if not ladder_bps:
        raise ValueError("the ladder is empty")
    if list(ladder_bps) != sorted(ladder_bps):
        raise ValueError("ladder_bps must be ascending")
    prior_usable = population is not None and population.sessions >= config.min_population_sessions
    fresh = (
        session is not None
        and session.estimator.can_estimate
        and now_s - session.last_seen_s <= config.stale_after_s
    )
    if fresh and session is not None:
        own = session.estimator.estimate_bps()
        confidence = session.estimator.confidence()
        if prior_usable and population is not None:
            estimate = confidence * own + (1.0 - confidence) * population.p25_bps
            confidence = max(confidence, _population_confidence(population, config))
        else:
            estimate = own
        source = GuidanceSource.SESSION
        if session.stalls:
            # A session that has stalled is given less rope than its average says.
            estimate *= 0.8
    elif prior_usable and population is not None:
        estimate = population.p25_bps
        confidence = _population_confidence(population, config)
        source = GuidanceSource.POPULATION
    else:
        estimate = config.default_bps
        confidence = 0.0
        source = GuidanceSource.DEFAULT
    safety = config.start_safety_unsure + confidence * (
        config.start_safety_confident - config.start_safety_unsure
    )
    start = highest_at_or_below(ladder_bps, estimate * safety)
    top = len(ladder_bps) - 1
    if confidence >= config.min_cap_confidence:
        ceiling = estimate * config.cap_headroom
        if source is GuidanceSource.POPULATION and population is not None:
            ceiling = max(ceiling, population.p90_bps)
        cap = max(start, highest_at_or_below(ladder_bps, ceiling))
    else:
        cap = top
    return Guidance(
        start_index=start,
        start_bitrate_bps=ladder_bps[start],
        max_index=cap,
        max_bitrate_bps=ladder_bps[cap],
        estimate_bps=estimate,
        confidence=confidence,
        source=source,
    )


def _population_confidence(population: Population, config: PolicyConfig) -> float:
    """More sessions, more trust; a wide spread (p90/p10), less."""
    depth = min(1.0, population.sessions / (4.0 * config.min_population_sessions))
    spread = population.p90_bps / max(population.p10_bps, 1.0)
    return depth * min(1.0, 2.0 / max(spread, 1.0)) * 0.9
