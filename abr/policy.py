"""The guidance policy: what the origin tells one session.

``decide`` is a pure function.  It is given the ladder, what is known of the
session, what is known of sessions like it (the population prior) and the
time, and returns a :class:`Guidance`.  The HTTP edge turns guidance into the
channels players really read (``docs/player-models.md``): the cap, as the
variants a per-session manifest lists; the start rung, when the guidance
hints one, as hls.js ``startLevel`` (set by the page; variant order does not
steer hls.js on an audio ladder under 500 kb/s) and as the MPD
ServiceDescription OperatingBandwidth ``target`` for dash.js; and
``CMSD-Dynamic: etp``, which the default players ignore (dash.js reads it
only when ``cmsd.enabled`` and ``etpWeightRatio`` are set, Shaka by default).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cadenza.abr.estimator import DEFAULT_ESTIMATE_BPS, DualEwma


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
    # The player's own latest throughput (its CMCD ``mtp``), bit/s.
    last_throughput_bps: float | None = None


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
    min_population_sessions: int = 3
    # Start below the estimate: by this factor at full confidence, more at less.
    start_safety_confident: float = 0.85
    start_safety_unsure: float = 0.55
    # The cap leaves room to climb: rungs up to this multiple of the estimate.
    cap_headroom: float = 2.5
    # Below this confidence the cap is the top of the ladder.
    min_cap_confidence: float = 0.5
    default_bps: float = DEFAULT_ESTIMATE_BPS
    # The packager's default segment duration: what the first download costs.
    segment_duration_s: float = 4.0


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
    # The throughput to tell the player (CMSD ``etp``): see :func:`blend_etp`.
    etp_bps: float = 0.0
    # Whether the start rung is a hint worth giving: a player told nothing
    # starts where it would anyway (hls.js high, dash.js low), so a start hint
    # is given only when the origin knows enough to beat that.
    start_hint: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "start_bitrate_bps": self.start_bitrate_bps,
            "max_bitrate_bps": self.max_bitrate_bps,
            "estimate_bps": round(self.estimate_bps),
            "confidence": round(self.confidence, 3),
            "etp_bps": round(self.etp_bps),
            "source": self.source.value,
            "start_hint": self.start_hint,
        }


def highest_at_or_below(ladder_bps: Sequence[int], rate_bps: float) -> int:
    """Index of the highest rung not above ``rate_bps``; the lowest when none is."""
    chosen = 0
    for index, bitrate in enumerate(ladder_bps):
        if bitrate <= rate_bps:
            chosen = index
    return chosen


def blend_etp(
    own_bps: float, session_confidence: float, prior_bps: float, prior_confidence: float
) -> float:
    """The throughput the origin tells a player: the player's own, moved towards
    the population prior only as far as the prior is trusted and the session
    has not yet measured for itself.  Echoing a player's own estimate back is
    neutral when it blends ``etp`` in (dash.js ``etpWeightRatio``), so the
    origin adds exactly what it knows that the player does not.
    """
    weight = (1.0 - session_confidence) * prior_confidence
    return own_bps + weight * (prior_bps - own_bps)


def best_start(ladder_bps: Sequence[int], rate_bps: float, segment_duration_s: float) -> int:
    """The start rung that pays for its own startup delay.

    A first segment at bitrate R is worth its quality twice (its own chunk,
    and the switch up it saves later) and costs the time to fetch it at the
    rebuffer price of QoE_lin (the top rung's quality per second, as in
    Pensieve): value(R) = 2 q(R) - q(R_top) * R * T / rate.  Only rungs the
    rate sustains are candidates; on a slow link the lowest rung wins.
    """
    top_mbps = ladder_bps[-1] / 1e6
    best, best_value = 0, float("-inf")
    for index, bitrate in enumerate(ladder_bps):
        if index > 0 and bitrate > rate_bps:
            break
        value = 2.0 * bitrate / 1e6 - top_mbps * bitrate * segment_duration_s / max(rate_bps, 1.0)
        if value > best_value:
            best, best_value = index, value
    return best


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
    start) stands in; without either, a fixed default as players use.  From
    the prior alone the start rung is a hint (:attr:`Guidance.start_hint`)
    only when the population's 10th and 90th percentiles would start on the
    same rung; the default guidance never hints.
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
        echo = session.last_throughput_bps or own
        if prior_usable and population is not None:
            prior_confidence = _population_confidence(population, config)
            estimate = blend_etp(own, confidence, population.p25_bps, prior_confidence)
            etp = blend_etp(echo, confidence, population.p25_bps, prior_confidence)
            confidence = max(confidence, prior_confidence)
        else:
            estimate, etp = own, echo
        source = GuidanceSource.SESSION
        if session.stalls:
            # A session that has stalled is given less rope than its average says.
            estimate *= 0.8
    elif prior_usable and population is not None:
        estimate = etp = population.p25_bps
        confidence = _population_confidence(population, config)
        source = GuidanceSource.POPULATION
    else:
        # Knowing nothing, change nothing: the lowest rung first, as the
        # packaged manifests list it, and no cap.
        top = len(ladder_bps) - 1
        return Guidance(
            start_index=0,
            start_bitrate_bps=ladder_bps[0],
            max_index=top,
            max_bitrate_bps=ladder_bps[top],
            estimate_bps=config.default_bps,
            confidence=0.0,
            source=GuidanceSource.DEFAULT,
            etp_bps=config.default_bps,
            start_hint=False,
        )
    safety = config.start_safety_unsure + confidence * (
        config.start_safety_confident - config.start_safety_unsure
    )
    start = best_start(ladder_bps, estimate * safety, config.segment_duration_s)
    hint = True
    if source is GuidanceSource.POPULATION and population is not None:
        # A new session could be anywhere in the population: hint a start
        # only if the whole 10th-90th percentile range agrees on it.  Players
        # left alone start where they would anyway (hls.js at the highest
        # rung under 500 kb/s, dash.js at the lowest), and a start hint that
        # is wrong for a session costs more than no hint.
        low = best_start(ladder_bps, population.p10_bps * safety, config.segment_duration_s)
        high = best_start(ladder_bps, population.p90_bps * safety, config.segment_duration_s)
        hint = low == high
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
        etp_bps=etp,
        start_hint=hint,
    )


def _population_confidence(population: Population, config: PolicyConfig) -> float:
    """More sessions, more trust; a wide spread (p90/p10), less."""
    depth = min(1.0, population.sessions / (4.0 * config.min_population_sessions))
    spread = population.p90_bps / max(population.p10_bps, 1.0)
    return depth * min(1.0, 2.0 / max(spread, 1.0)) * 0.9
