"""The origin's ABR controller: which rung to serve for one segment request.

With ``?abr=origin`` a manifest lists one rendition per codec family and the
origin picks the rung at each segment request.  :func:`decide_rung` is that
decision, a pure function of the session's causal state (what earlier requests
left in :class:`ControllerState`), the request's :class:`Signals`, the ladder
(one group's rungs, ascending), the segment duration, the population prior and
the time (``now_s``, an argument like everything else).  It returns a
:class:`Decision` and the state to store for the next request.

Algorithm: robust MPC (Yin et al. 2015) on QoE_lin, the objective the report's
% of offline-optimal measures (:class:`~cadenza.abr.controller_table.Objective`),
looked up in a FastMPC-style table (:mod:`cadenza.abr.controller_table`), with
two changes to its plan and one to its forecast, each measured
(``docs/abr.md``):

* robust MPC's prediction (:class:`cadenza.abr.sim.baselines.RobustMpc`) is the
  harmonic mean of the last five throughput samples divided by one plus the
  largest relative prediction error of the last five; here each error is capped
  at ``max_error`` (0.5), and until ``start_samples`` samples the discount
  assumes at least ``start_error`` (0.5), since the first samples have no error
  history;
* the mean reverts: the session's level is an exponentially weighted mean of the
  samples' logs, and the plan assumes the recent mean moving back toward it
  over the horizon (:func:`~cadenza.abr.controller_memory.reverted_bps`), so
  a burst after a slow minute, or a dip in a fast one, is not planned on as if
  it would last;
* the plan values the buffer it leaves at its horizon's end, up to 15 s
  (``PlanConfig.terminal_weight``), instead of spending it on the top rung
  whenever the estimate allows.

After the plan, one rule (:mod:`cadenza.abr.controller_hold`): while the buffer
is deep, the rung just above the session's level is held (reason
``level-hold``), so a link whose level sits between two rungs plays both, in long
runs, as BBA does, where the discounted plan would stay on the rung below.

The samples (:mod:`cadenza.abr.controller_samples`) come from the TCP delivery rate of
the previous response when the origin served it, the player's CMCD ``mtp`` and the
request timing, each checked against the others.  Without ``bl`` the buffer is
estimated from the same request timing.

Before any sample the start rung is the plan's at an empty buffer for the
population prior (its 25th percentile) or else the ``ECT`` hint's typical
downlink; knowing nothing, the lowest rung.  A playing session whose buffer is
below ``panic_buffer_s`` (or that reports starvation with under one segment
left) gets the lowest rung.  Caps come last: ``Save-Data: on`` caps at the
lowest rung, ``max_bitrate_bps`` and the ``slow-2g``/``2g``/``3g`` hints at
the highest rung not above them (the lowest if none is); CMCD ``rtp`` caps the
throughput the plan assumes.

The plan never looks past the track's end: with fewer segments left than its
horizon (``Signals.remaining_segments``, which the origin knows from the
requested segment's number) the decision comes from the table of a plan of
that many segments (:func:`~cadenza.abr.controller_table.end_plan`).

How it scores against the players and other policies, per trace set, with and without
CMCD, served or redirected: ``docs/abr.md`` (``make abr-report``: ``docs/abr-results.md``).

Cost: ``bench/abr_decision.py`` measures about 10 us of CPU per decision; the tables
are built once per ladder, segment duration and configuration (0.2 s for four rungs, 1.8
s for six: build them off the event loop).  A session's state is about 270 bytes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cadenza.abr.controller_hold import DEFAULT_HOLD, HoldRules, held_rung
from cadenza.abr.controller_inputs import (
    ECT_MAX_DOWNLINK_BPS,
    ECT_PRIOR_BPS,
    Signals,
)
from cadenza.abr.controller_memory import (
    MAX_LOG_SAMPLE,
    MAX_SAMPLE_BPS,
    MIN_SAMPLE_BPS,
    PAIR,
    level_of,
    reverted_bps,
    unpack_window,
)
from cadenza.abr.controller_samples import DEFAULT_SAMPLE_RULES, SampleRules, link_sample_bps
from cadenza.abr.controller_table import (
    DEFAULT_PLAN,
    NO_PREVIOUS,
    PlanConfig,
    decision_table,
    end_plan,
)
from cadenza.abr.frozen import fast_init
from cadenza.abr.policy import Population, highest_at_or_below
from cadenza.abr.sim.baselines import harmonic_mean_bps, relative_error


class Reason(enum.StrEnum):
    START_DEFAULT = "start-default"
    START_PRIOR = "start-prior"
    START_ECT = "start-ect"
    MPC = "mpc"
    LEVEL_HOLD = "level-hold"
    BUFFER_LOW = "buffer-low"
    SAVE_DATA = "save-data"
    MAX_BITRATE = "max-bitrate"
    ECT_CAP = "ect-cap"


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    plan: PlanConfig = DEFAULT_PLAN
    # Robust MPC's window: samples for the harmonic mean, errors for the discount.
    window: int = 5
    # A population prior needs this many sessions behind it.
    min_population_sessions: int = 3
    # The start plan assumes this share of the prior.
    start_safety: float = 0.85
    panic_buffer_s: float = 2.0
    # The largest relative prediction error the robust discount counts: one deep
    # dip must not divide the prediction by four for the next five segments (the
    # dip's sample already pulls the harmonic mean down).  0.5 with the terminal
    # value and the reversion below (0.75 before them).
    max_error: float = 0.5
    # Until this many samples, the discount assumes at least ``start_error``: the
    # first samples have no error history, and a plan that climbs on one sample
    # stalls where the link is only just above a rung (3g, 120 traces: 81.8 to 82.7).
    start_samples: int = 4
    start_error: float = 0.5
    # Mean reversion: the forecast for the k-th segment ahead is the session's
    # level (an EWMA of the log samples, this weight for each new one) plus
    # ``reversion ** k`` times the recent estimate's distance from it, in logs.
    # 0 weight: no reversion (the plan assumes the recent estimate throughout).
    level_weight: float = 0.05
    reversion: float = 0.6
    # The level is used from this many samples on.
    level_min_samples: int = 3
    # What counts as a throughput sample (cadenza.abr.controller_samples).
    samples: SampleRules = DEFAULT_SAMPLE_RULES
    # When the rung above the session's level is held (cadenza.abr.controller_hold).
    hold: HoldRules = DEFAULT_HOLD

    def __post_init__(self) -> None:
        if not 0.0 <= self.level_weight <= 1.0 or not 0.0 <= self.reversion <= 1.0:
            raise ValueError("level_weight and reversion must be within [0, 1]")


DEFAULT_CONTROLLER: Final = ControllerConfig()


@fast_init
@dataclass(frozen=True, slots=True)
class ControllerState:
    """What a session keeps between decisions (about 270 bytes in CPython)."""

    requests: int = 0
    last_request_s: float = 0.0
    last_index: int = NO_PREVIOUS
    # The buffer believed at the last request.
    buffer_s: float = 0.0
    last_prediction_bps: float = 0.0
    # (sample bit/s, relative error) float32 pairs, oldest first.
    window: bytes = b""
    # The EWMA of the samples' natural logs, before its start-up correction (divide
    # by ``1 − (1 − weight) ** level_samples``), and how many samples it holds.
    level_log: float = 0.0
    level_samples: int = 0

    def samples_and_errors(self) -> tuple[list[float], list[float]]:
        return unpack_window(self.window)


INITIAL_STATE: Final = ControllerState()


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    index: int
    bitrate_bps: int
    reason: Reason
    # The throughput the plan assumed (robust, reverted toward the session's level; or the prior).
    throughput_bps: float
    buffer_s: float
    # The robust estimate of the link now, before the reversion: what this segment's
    # fetch will see (the delivery rule's input), bit/s.  The prior before any sample.
    link_bps: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "bitrate_bps": self.bitrate_bps,
            "reason": self.reason.value,
            "throughput_bps": round(self.throughput_bps),
            "link_bps": round(self.link_bps),
            "buffer_s": round(self.buffer_s, 3),
        }


def previous_rung(ladder_bps: Sequence[int], state: ControllerState, signals: Signals) -> int:
    """The rung of the previous object: ours (if the ladder still has it), else the one
    CMCD ``br`` names."""
    if 0 <= state.last_index < len(ladder_bps):
        return state.last_index
    if signals.encoded_kbps is not None:
        for index, bitrate in enumerate(ladder_bps):
            if abs(bitrate - signals.encoded_kbps * 1000) < 1000:
                return index
    return NO_PREVIOUS


def throughput_sample_bps(
    ladder_bps: Sequence[int],
    state: ControllerState,
    signals: Signals,
    gap_s: float | None,
    segment_duration_s: float,
    config: ControllerConfig = DEFAULT_CONTROLLER,
) -> float | None:
    """The previous object's throughput, or None when nothing measured it."""
    previous = previous_rung(ladder_bps, state, signals)
    return link_sample_bps(ladder_bps, previous, signals, gap_s, segment_duration_s, config.samples)


def believed_buffer_s(
    state: ControllerState,
    signals: Signals,
    gap_s: float | None,
    segment_duration_s: float,
    buffer_cap_s: float,
) -> float:
    """CMCD ``bl`` if sent; else the last belief plus a segment, less the time played."""
    if signals.buffer_ms is not None:
        return signals.buffer_ms / 1000.0
    if signals.startup or state.requests == 0 or gap_s is None:
        return 0.0
    played_s = gap_s if state.requests > 1 else 0.0
    return min(max(state.buffer_s + segment_duration_s - played_s, 0.0), buffer_cap_s)


def _cap(ladder_bps: Sequence[int], signals: Signals) -> tuple[int, Reason | None]:
    cap, reason = len(ladder_bps) - 1, None
    if signals.save_data:
        return 0, Reason.SAVE_DATA
    if signals.max_bitrate_bps is not None:
        index = highest_at_or_below(ladder_bps, signals.max_bitrate_bps)
        if index < cap:
            cap, reason = index, Reason.MAX_BITRATE
    ceiling = ECT_MAX_DOWNLINK_BPS[signals.ect] if signals.ect is not None else None
    if ceiling is not None:
        index = highest_at_or_below(ladder_bps, ceiling)
        if index < cap:
            cap, reason = index, Reason.ECT_CAP
    return cap, reason


def decide_rung(
    ladder_bps: Sequence[int],
    state: ControllerState | None,
    signals: Signals,
    now_s: float,
    *,
    segment_duration_s: float,
    population: Population | None = None,
    config: ControllerConfig = DEFAULT_CONTROLLER,
) -> tuple[Decision, ControllerState]:
    """The rung for this request and the state to keep (see the module docstring)."""
    ladder = ladder_bps if isinstance(ladder_bps, tuple) else tuple(ladder_bps)
    plan = config.plan
    remaining = signals.remaining_segments
    if remaining is not None and remaining < plan.horizon:
        plan = end_plan(plan, remaining)
    table = decision_table(ladder, segment_duration_s, plan)
    state = INITIAL_STATE if state is None else state
    requests = state.requests
    gap_s = now_s - state.last_request_s if requests else None
    previous = previous_rung(ladder, state, signals)
    sample = link_sample_bps(ladder, previous, signals, gap_s, segment_duration_s, config.samples)
    window = state.window
    window = window[len(window) % PAIR.size :]
    prediction = state.last_prediction_bps
    level_log, level_samples = state.level_log, state.level_samples
    if not (0.0 <= level_log <= MAX_LOG_SAMPLE and level_samples >= 0):  # not a state of ours
        level_log, level_samples = 0.0, 0
    if sample is not None:
        sample = min(max(sample, MIN_SAMPLE_BPS), MAX_SAMPLE_BPS)
        known = math.isfinite(prediction) and prediction > 0
        error = relative_error(prediction, sample) if known else 0.0
        error = min(error, config.max_error, MAX_SAMPLE_BPS)
        window = (window + PAIR.pack(sample, error))[-PAIR.size * config.window :]
        weight = config.level_weight
        if weight > 0:
            level_log = (1.0 - weight) * level_log + weight * math.log(sample)
            level_samples += 1
    buffer_s = believed_buffer_s(
        state, signals, gap_s, segment_duration_s, config.plan.buffer_cap_s
    )
    startup = signals.startup
    samples, errors = unpack_window(window)
    if samples:
        # sim.baselines' robust_throughput_bps(samples, errors, config.window) and
        # harmonic_mean_bps(samples), the harmonic mean computed once when the window
        # holds no more than ``config.window`` samples (as it does but for a state
        # stored with another configuration).
        prediction = len(samples) / sum([1.0 / sample for sample in samples])
        recent = config.window
        if len(samples) > recent or recent < 1:
            estimate, worst = harmonic_mean_bps(samples[-recent:]), max(errors[-recent:])
        else:
            estimate, worst = prediction, max(errors)
        if len(samples) <= config.start_samples:
            worst = max(worst, config.start_error)
        recent_bps, link = estimate, estimate / (1.0 + worst)
        estimate = reverted_bps(
            estimate,
            level_log,
            level_samples,
            plan.horizon,
            config.level_weight,
            config.reversion,
            config.level_min_samples,
        )
        throughput = estimate / (1.0 + worst)
        level = level_of(level_log, level_samples, config.level_weight, config.level_min_samples)
        level_bps = 0.0 if level is None else math.exp(level)
        if signals.requested_max_kbps is not None:
            throughput = min(throughput, signals.requested_max_kbps * 1000.0)
            link = min(link, signals.requested_max_kbps * 1000.0)
            level_bps = min(level_bps, signals.requested_max_kbps * 1000.0)
        index, reason = table.lookup(buffer_s, throughput, previous), Reason.MPC
        held = held_rung(
            ladder,
            index,
            previous,
            buffer_s,
            level_bps,
            recent_bps,
            plan=config.plan,
            rules=config.hold,
        )
        if held != index:
            index, reason = held, Reason.LEVEL_HOLD
        # A buffer that was built and is now short is draining: fall back.  One that was
        # never built is a start (dash.js sends su=true on its first request only, then
        # bl near 0 on the second), which the table already handles.
        if index > 0 and requests > 0 and not startup:
            panic_s = config.panic_buffer_s
            built = state.buffer_s >= panic_s
            if (built and buffer_s < panic_s) or (
                signals.starved and buffer_s < segment_duration_s
            ):
                index, reason = 0, Reason.BUFFER_LOW
    else:
        prior, reason = _prior(population, signals, config)
        throughput = link = prior or 0.0
        index = (
            0 if prior is None else table.lookup(buffer_s, prior * config.start_safety, previous)
        )
    if signals.save_data or signals.max_bitrate_bps is not None or signals.ect is not None:
        cap, cap_reason = _cap(ladder, signals)
        if index > cap and cap_reason is not None:
            index, reason = cap, cap_reason
    decision = Decision(index, ladder[index], reason, throughput, buffer_s, link)
    return decision, ControllerState(
        requests + 1, now_s, index, buffer_s, prediction, window, level_log, level_samples
    )


def _prior(
    population: Population | None, signals: Signals, config: ControllerConfig
) -> tuple[float | None, Reason]:
    if population is not None and population.sessions >= config.min_population_sessions:
        return population.p25_bps, Reason.START_PRIOR
    if signals.ect is not None:
        return ECT_PRIOR_BPS[signals.ect], Reason.START_ECT
    return None, Reason.START_DEFAULT
