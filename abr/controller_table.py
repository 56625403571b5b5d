"""The origin controller's robust-MPC plan, online and as a precomputed decision table.

Robust MPC (Yin et al., "A Control-Theoretic Approach for Dynamic Adaptive Video
Streaming over HTTP", SIGCOMM 2015): over the next ``horizon`` segments, every
rung sequence is scored at a constant (robust) throughput by
``Σ q(R_k) − μ·rebuffer − w·Σ |q(R_k) − q(R_{k−1})| + τ·μ·min(B_end, B_τ)`` and
the first rung of the best sequence is taken.  The last term is a terminal value
(``terminal_weight`` τ, ``terminal_target_s`` B_τ): the buffer a plan leaves at
its horizon's end is worth a share of a stall second each, up to a target, because
the session goes on after the horizon and that buffer is what rides out the
next dip.  Without it a five-segment plan spends the buffer on the top rung
whenever the estimate allows and drops a rung when it runs out.  The
:class:`Objective` gives ``q`` and ``μ``: QoE_lin's
(:func:`cadenza.abr.sim.qoe.qoe_lin`: the bitrate in Mb/s, ``μ`` the top rung's,
the default) or the perceptual QoE's
(:func:`cadenza.abr.sim.qoe.qoe_perceptual`: a utility saturating near 1, ``μ``
one).  ``w`` is ``switch_penalty``.  The online search (:func:`plan_first_rung`) costs a few
hundred microseconds; an origin makes one decision per segment request, so it
looks the decision up instead (FastMPC, the same paper, section 5):
:func:`decision_table` enumerates every quantised (buffer, throughput, previous
rung) cell once per ladder, segment duration and configuration (cached) and
:meth:`DecisionTable.lookup` is an index computation.

Quantisation: the buffer is floored to ``buffer_step_s`` and the throughput to
a log grid of ``steps_per_octave`` per octave, so a looked-up decision is the
online plan's at the largest grid state not above the real one (exactly equal
at grid states; the throughput is under-estimated by less than one grid step,
about 9 %).  As in the simulator's :class:`~cadenza.abr.sim.baselines.RobustMpc`
the horizon shortens at the end of the content: the controller looks the last
segments up in the table of a plan whose horizon is the segments left
(:func:`end_plan`), so it never plans past the track's end (the buffer left
then is worth nothing: an end plan has no terminal value).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Final

import numpy as np

from cadenza.abr.sim.link import FloatArray, IntArray
from cadenza.abr.sim.qoe import perceptual_quality, quality_mbps

# Beyond this many sequences a plan looks fewer segments ahead.  6 ** 5: every ladder
# the packager makes (at most six rungs per codec) plans the full five; a short
# horizon is myopic on slow links (horizon 4 lost 40 points of % of optimal on the
# satellite set).  A six-rung table takes about 1.4 s to build, a four-rung one
# 0.15 s: build it off the event loop (``decision_table`` is cached) before the
# first request needs it.
MAX_PLAN_SEQUENCES: Final = 7776
NO_PREVIOUS: Final = -1


class Objective(enum.StrEnum):
    """The utility the plan scores a rung by.

    QoE_lin is the default: it is what the ABR report's % of offline-optimal
    measures, and where the link carries the top rung the perceptual utility
    (256 and 320 kb/s differ by 0.013 in it) settles a rung below.  Measured
    with the origin's other defaults and its redirect, perceptual planning scored
    lower in % of optimal on seven of the eight bundled sets (wifi 99 against
    100, Norway 3G 98 against 100, FCC x0.2 69 against 70) and on held-out wifi
    traces; higher on the synthetic 3g set, by under one point."""

    # :func:`cadenza.abr.sim.qoe.perceptual_quality`, a stall second costing 1.
    PERCEPTUAL = "perceptual"
    # QoE_lin's: the bitrate in Mb/s, a stall second costing the top rung's.
    LINEAR = "linear"


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """What the plan (and so the table) depends on, besides the ladder and segment."""

    horizon: int = 5
    # The player's buffer cap the plan assumes (the simulator's default).
    buffer_cap_s: float = 30.0
    objective: Objective = Objective.LINEAR
    # The price of one second of stall: this many times the top rung's utility
    # (QoE_lin's μ) for LINEAR, this many units for PERCEPTUAL (utility below 1).
    rebuffer_penalty: float = 1.0
    # The weight of a switch's quality change in the plan (the QoE's own is 1).
    # Planning at twice it damps the oscillation a noisy estimate causes: on the
    # bundled sets 2 beat 1 on every slow one (redirected, FCC x0.2: 70 against
    # 66 % of optimal) and lost nowhere; 5 stops the climb from the start rung.
    # On held-out traces (other seeds and scales) the two are within 2.5 points
    # either way, 1 ahead on four of seven sets redirected: a bundled-set choice.
    switch_penalty: float = 2.0
    # The terminal value: each second of buffer the plan leaves at its horizon's end,
    # up to ``terminal_target_s``, is worth this share of a stall second.  Chosen by a
    # search on training traces disjoint from the report's sets (docs/abr.md, "The
    # origin-decided controller"); it is what lifts the satellite sets (64.9 to 79.2 %
    # of optimal over 120 satellite traces, with the controller's other defaults).
    terminal_weight: float = 0.12
    terminal_target_s: float = 15.0
    buffer_step_s: float = 0.5
    steps_per_octave: int = 8
    # The throughput grid spans the lowest rung / low_ratio .. the top rung × high_ratio.
    low_ratio: float = 8.0
    high_ratio: float = 16.0
    # The hash of the fields above, kept: the plan is a key of the decision tables'
    # cache, hashed at every decision.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.horizon, self.buffer_cap_s, self.objective, self.rebuffer_penalty)
        terminal = (self.terminal_weight, self.terminal_target_s)
        more = (self.switch_penalty, *terminal, self.buffer_step_s, self.steps_per_octave)
        object.__setattr__(self, "_hash", hash((*fields, *more, self.low_ratio, self.high_ratio)))

    def __hash__(self) -> int:
        return self._hash


DEFAULT_PLAN: Final = PlanConfig()


def plan_horizon(rungs: int, horizon: int) -> int:
    """``horizon``, shortened until ``rungs ** horizon`` fits :data:`MAX_PLAN_SEQUENCES`."""
    h = max(1, horizon)
    while h > 1 and rungs**h > MAX_PLAN_SEQUENCES:
        h -= 1
    return h


@lru_cache(maxsize=32)
def sequences(rungs: int, horizon: int) -> IntArray:
    """Every rung sequence of ``horizon`` segments, in ``itertools.product`` order."""
    grid = np.array(list(itertools.product(range(rungs), repeat=horizon)), dtype=np.int64)
    return grid.reshape(-1, horizon)


def plan_values(
    quality: FloatArray,
    sizes_bits: FloatArray,
    combos: IntArray,
    throughput_bps: FloatArray,
    buffer_s: float,
    segment_duration_s: float,
    buffer_cap_s: float,
    rebuffer_penalty: float,
    switch_penalty: float = 1.0,
    terminal_weight: float = 0.0,
    terminal_target_s: float = 0.0,
) -> FloatArray:
    """QoE of each sequence (columns) at each constant throughput (rows), before the
    switch from the previous rung: ``Σ q − μ·rebuffer − w·Σ_{k≥1} |q_k − q_{k−1}|``
    plus the terminal value ``τ·μ·min(buffer at the end, target)``.

    The buffer model is the simulator's: a download of ``bits / throughput``
    drains the buffer (what it cannot cover is a stall), then adds one
    segment, capped at ``buffer_cap_s``.
    """
    rates = np.asarray(throughput_bps, dtype=np.float64).reshape(-1, 1)
    buffer = np.full((len(rates), len(combos)), float(buffer_s))
    rebuffer = np.zeros_like(buffer)
    for k in range(combos.shape[1]):
        download = sizes_bits[combos[:, k]].reshape(1, -1) / rates
        rebuffer += np.maximum(download - buffer, 0.0)
        buffer = np.minimum(np.maximum(buffer - download, 0.0) + segment_duration_s, buffer_cap_s)
    q = quality[combos]
    gain = q.sum(axis=1) - switch_penalty * np.abs(np.diff(q, axis=1)).sum(axis=1)
    values: FloatArray = gain.reshape(1, -1) - rebuffer_penalty * rebuffer
    if terminal_weight > 0:
        values += terminal_weight * rebuffer_penalty * np.minimum(buffer, terminal_target_s)
    return values


def switch_costs(
    quality: FloatArray, combos: IntArray, previous: int, switch_penalty: float = 1.0
) -> FloatArray:
    """|q(first rung) − q(previous)| per sequence (weighted); zero with no previous rung."""
    if previous == NO_PREVIOUS:
        return np.zeros(len(combos))
    costs: FloatArray = switch_penalty * np.abs(quality[combos[:, 0]] - quality[previous])
    return costs


def ladder_utilities(ladder_bps: Sequence[int], config: PlanConfig) -> tuple[FloatArray, float]:
    """Each rung's utility in the plan's objective, and the price of a stall second."""
    if config.objective is Objective.LINEAR:
        quality = np.array([quality_mbps(float(b)) for b in ladder_bps], dtype=np.float64)
        return quality, config.rebuffer_penalty * quality_mbps(float(ladder_bps[-1]))
    quality = np.array([perceptual_quality(float(b)) for b in ladder_bps], dtype=np.float64)
    return quality, config.rebuffer_penalty


def _ladder_arrays(
    ladder_bps: Sequence[int], segment_duration_s: float, config: PlanConfig
) -> tuple[FloatArray, FloatArray, float]:
    """Each rung's utility and size in bits, and the price of a stall second."""
    quality, stall_price = ladder_utilities(ladder_bps, config)
    sizes = np.asarray(ladder_bps, dtype=np.float64) * segment_duration_s
    return quality, sizes, stall_price


def plan_first_rung(
    ladder_bps: Sequence[int],
    throughput_bps: float,
    buffer_s: float,
    previous: int,
    segment_duration_s: float,
    config: PlanConfig = DEFAULT_PLAN,
) -> int:
    """The online robust-MPC decision: the first rung of the best plan (ties: the
    sequence first in ``itertools.product`` order, as :class:`RobustMpc` breaks them)."""
    quality, sizes, stall_price = _ladder_arrays(ladder_bps, segment_duration_s, config)
    combos = sequences(len(ladder_bps), plan_horizon(len(ladder_bps), config.horizon))
    values = plan_values(
        quality,
        sizes,
        combos,
        np.array([throughput_bps]),
        buffer_s,
        segment_duration_s,
        config.buffer_cap_s,
        stall_price,
        config.switch_penalty,
        config.terminal_weight,
        config.terminal_target_s,
    )[0]
    values = values - switch_costs(quality, combos, previous, config.switch_penalty)
    return int(combos[int(np.argmax(values)), 0])


# Plans shortened to the segments left, by (plan, segments left).
_END_PLANS: dict[tuple[PlanConfig, int], PlanConfig] = {}


def end_plan(plan: PlanConfig, remaining: int) -> PlanConfig:
    """``plan`` with its horizon shortened to ``remaining`` segments and no terminal
    value (``plan`` itself when at least its horizon is left, or ``remaining`` is
    not positive): the buffer left when the track ends is worth nothing."""
    if remaining >= plan.horizon or remaining < 1:
        return plan
    key = (plan, remaining)
    found = _END_PLANS.get(key)
    if found is None:
        found = _END_PLANS[key] = replace(plan, horizon=remaining, terminal_weight=0.0)
    return found


@dataclass(frozen=True, slots=True)
class DecisionTable:
    """First rungs of the best plans, indexed by (previous rung + 1, buffer cell,
    throughput cell), flattened into ``cells`` (one byte each)."""

    ladder_bps: tuple[int, ...]
    segment_duration_s: float
    config: PlanConfig
    low_bps: float
    buffer_cells: int
    throughput_cells: int
    cells: bytes
    # The top cells' buffer and throughput (looked up at every decision).
    top_buffer_s: float = field(init=False, repr=False, compare=False)
    top_bps: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "top_buffer_s", self.buffer_at(self.buffer_cells - 1))
        object.__setattr__(self, "top_bps", self.throughput_at(self.throughput_cells - 1))

    def buffer_at(self, cell: int) -> float:
        return cell * self.config.buffer_step_s

    def throughput_at(self, cell: int) -> float:
        return self.low_bps * math.pow(2.0, cell / self.config.steps_per_octave)

    def buffer_cell(self, buffer_s: float) -> int:
        if not buffer_s > 0:  # NaN too
            return 0
        if buffer_s >= self.top_buffer_s:
            return self.buffer_cells - 1
        cell = int(buffer_s / self.config.buffer_step_s + 1e-9)
        return min(max(cell, 0), self.buffer_cells - 1)

    def throughput_cell(self, throughput_bps: float) -> int:
        if not throughput_bps > self.low_bps:  # NaN too
            return 0
        if throughput_bps >= self.top_bps:
            return self.throughput_cells - 1
        cell = int(math.log2(throughput_bps / self.low_bps) * self.config.steps_per_octave + 1e-9)
        return min(cell, self.throughput_cells - 1)

    def lookup(self, buffer_s: float, throughput_bps: float, previous: int) -> int:
        """The decision at the grid state at or below (buffer, throughput)."""
        row = (previous + 1) * self.buffer_cells + self.buffer_cell(buffer_s)
        return self.cells[row * self.throughput_cells + self.throughput_cell(throughput_bps)]


# Room for the tables of about fifty ladders, each with its end-of-content plans.
@lru_cache(maxsize=256)
def decision_table(
    ladder_bps: tuple[int, ...], segment_duration_s: float, config: PlanConfig = DEFAULT_PLAN
) -> DecisionTable:
    """Every cell's online decision (:func:`plan_first_rung`), computed in bulk."""
    if not ladder_bps or list(ladder_bps) != sorted(set(ladder_bps)) or ladder_bps[0] <= 0:
        raise ValueError("ladder_bps must be positive and strictly ascending")
    if segment_duration_s <= 0 or config.buffer_cap_s < segment_duration_s:
        raise ValueError("need 0 < segment_duration_s <= buffer_cap_s")
    quality, sizes, stall_price = _ladder_arrays(ladder_bps, segment_duration_s, config)
    combos = sequences(len(ladder_bps), plan_horizon(len(ladder_bps), config.horizon))
    low = ladder_bps[0] / config.low_ratio
    octaves = math.log2(ladder_bps[-1] * config.high_ratio / low)
    throughput_cells = math.ceil(octaves * config.steps_per_octave) + 1
    buffer_cells = math.floor(config.buffer_cap_s / config.buffer_step_s + 1e-9) + 1
    rates = low * 2.0 ** (np.arange(throughput_cells) / config.steps_per_octave)
    previous_options = [NO_PREVIOUS, *range(len(ladder_bps))]
    costs = [switch_costs(quality, combos, p, config.switch_penalty) for p in previous_options]
    table = np.zeros((len(previous_options), buffer_cells, throughput_cells), dtype=np.uint8)
    for b in range(buffer_cells):
        base = plan_values(
            quality,
            sizes,
            combos,
            rates,
            b * config.buffer_step_s,
            segment_duration_s,
            config.buffer_cap_s,
            stall_price,
            config.switch_penalty,
            config.terminal_weight,
            config.terminal_target_s,
        )
        for p, cost in enumerate(costs):
            table[p, b, :] = combos[np.argmax(base - cost.reshape(1, -1), axis=1), 0]
    return DecisionTable(
        ladder_bps=ladder_bps,
        segment_duration_s=segment_duration_s,
        config=config,
        low_bps=low,
        buffer_cells=buffer_cells,
        throughput_cells=throughput_cells,
        cells=table.tobytes(),
    )
