"""Rate-adaptation policies from the literature, the baselines players are compared
with: BBA-0 (buffer-based) and robust MPC (model-predictive), plus a fixed plan."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cadenza.abr.sim.link import FloatArray, IntArray
from cadenza.abr.sim.session import PolicyInput, PolicyName, SessionSetup


def harmonic_mean_bps(samples_bps: Sequence[float]) -> float:
    if not samples_bps or any(sample <= 0 for sample in samples_bps):
        raise ValueError("need positive samples")
    return len(samples_bps) / sum(1.0 / sample for sample in samples_bps)


def relative_error(predicted_bps: float, actual_bps: float) -> float:
    """|predicted − actual| / actual, robust MPC's prediction error."""
    return abs(predicted_bps - actual_bps) / actual_bps


def robust_throughput_bps(
    samples_bps: Sequence[float], errors: Sequence[float], window: int = 5
) -> float:
    """Harmonic mean of the last ``window`` samples ÷ (1 + max of the last ``window`` errors)."""
    recent_errors = errors[-window:]
    worst = max(recent_errors) if recent_errors else 0.0
    return harmonic_mean_bps(samples_bps[-window:]) / (1.0 + worst)


def bba_choice(
    ladder_bps: Sequence[int],
    buffer_s: float,
    last_index: int | None,
    reservoir_s: float,
    upper_s: float,
) -> int:
    """BBA-0 (Huang et al., SIGCOMM 2014), rate map linear from the reservoir to ``upper_s``.

    Below the reservoir the lowest rung; at or above ``upper_s`` the highest;
    in the cushion the map ``f(B)`` is followed only once it passes the next
    rung up or down (``max{R_i < f(B)}`` up, ``min{R_i > f(B)}`` down),
    otherwise the previous rung is kept.
    """
    top = len(ladder_bps) - 1
    if top == 0 or buffer_s <= reservoir_s:  # one rung: nothing to choose
        return 0
    if buffer_s >= upper_s:
        return top
    previous = 0 if last_index is None else last_index
    r_min, r_max = ladder_bps[0], ladder_bps[top]
    rate = r_min + (r_max - r_min) * (buffer_s - reservoir_s) / (upper_s - reservoir_s)
    up = ladder_bps[min(previous + 1, top)]
    down = ladder_bps[max(previous - 1, 0)]
    if rate >= up:
        return max(i for i, bitrate in enumerate(ladder_bps) if bitrate < rate)
    if rate <= down:
        return min(i for i, bitrate in enumerate(ladder_bps) if bitrate > rate)
    return previous


@dataclass(frozen=True, slots=True)
class Bba:
    """BBA-0: reservoir 5 s, cushion up to 0.9 × the buffer cap (see :func:`bba_choice`)."""

    reservoir_s: float = 5.0
    upper_fraction: float = 0.9

    @property
    def name(self) -> str:
        return PolicyName.BBA.value

    def start(self, setup: SessionSetup) -> None:
        return None

    def choose(self, inp: PolicyInput, state: None) -> tuple[int, None]:
        upper_s = max(self.upper_fraction * inp.setup.buffer_cap_s, self.reservoir_s + 1e-9)
        buffer_s = inp.buffer_s if inp.playing else 0.0
        choice = bba_choice(inp.ladder_bps, buffer_s, inp.last_index, self.reservoir_s, upper_s)
        return choice, state


@dataclass(frozen=True, slots=True)
class MpcState:
    last_prediction_bps: float | None = None
    errors: tuple[float, ...] = ()


@lru_cache(maxsize=64)
def _combos(rungs: int, horizon: int) -> IntArray:
    grid = np.array(list(itertools.product(range(rungs), repeat=horizon)), dtype=np.int64)
    return grid.reshape(-1, horizon)


def mpc_plan_values(
    ladder_bps: Sequence[int],
    combos: IntArray,
    throughput_bps: float,
    buffer_s: float,
    last_index: int | None,
    segment_duration_s: float,
    buffer_cap_s: float,
) -> FloatArray:
    """QoE_lin of each rung sequence (rows of ``combos``) at a constant throughput."""
    ladder = np.asarray(ladder_bps, dtype=np.float64)
    quality = ladder / 1e6
    mu = float(quality[-1])
    download = ladder[combos] * segment_duration_s / throughput_bps
    buffer = np.full(len(combos), buffer_s)
    rebuffer = np.zeros(len(combos))
    for k in range(combos.shape[1]):
        rebuffer += np.maximum(download[:, k] - buffer, 0.0)
        buffer = np.maximum(buffer - download[:, k], 0.0) + segment_duration_s
        buffer = np.minimum(buffer, buffer_cap_s)
    q = quality[combos]
    smooth = np.abs(np.diff(q, axis=1)).sum(axis=1)
    if last_index is not None:
        smooth += np.abs(q[:, 0] - quality[last_index])
    values: FloatArray = q.sum(axis=1) - mu * rebuffer - smooth
    return values


@dataclass(frozen=True, slots=True)
class RobustMpc:
    """Robust MPC (Yin et al. 2015) as in Pensieve's reference implementation.

    Prediction: harmonic mean of the last 5 throughputs ÷ (1 + the largest
    relative error of the last 5 predictions), where each prediction is the
    plain harmonic mean made at the previous chunk.  Exhaustive search over
    every rung sequence of the next 5 chunks (fewer at the end) for the best
    QoE_lin at that throughput; the first rung of the best is taken.  The
    first chunk, with nothing measured, is the lowest rung.
    """

    horizon: int = 5
    window: int = 5

    @property
    def name(self) -> str:
        return PolicyName.ROBUST_MPC.value

    def start(self, setup: SessionSetup) -> MpcState:
        return MpcState()

    def choose(self, inp: PolicyInput, state: MpcState) -> tuple[int, MpcState]:
        if not inp.history:
            return 0, state
        samples = [m.throughput_bps for m in inp.history]
        error = (
            0.0
            if state.last_prediction_bps is None
            else relative_error(state.last_prediction_bps, samples[-1])
        )
        errors = (*state.errors, error)[-self.window :]
        predicted = robust_throughput_bps(samples, errors, self.window)
        state = MpcState(harmonic_mean_bps(samples[-self.window :]), errors)
        horizon = min(self.horizon, inp.setup.chunk_count - inp.chunk_index)
        combos = _combos(len(inp.ladder_bps), horizon)
        values = mpc_plan_values(
            inp.ladder_bps,
            combos,
            predicted,
            inp.buffer_s if inp.playing else 0.0,
            inp.last_index,
            inp.segment_duration_s,
            inp.setup.buffer_cap_s,
        )
        return int(combos[int(np.argmax(values)), 0]), state


@dataclass(frozen=True, slots=True)
class FixedPlan:
    """Plays a given rung sequence (the last rung repeats if it runs out)."""

    plan: tuple[int, ...]
    label: str = "fixed"

    @property
    def name(self) -> str:
        return self.label

    def start(self, setup: SessionSetup) -> None:
        if not self.plan:
            raise ValueError("the plan is empty")
        return None

    def choose(self, inp: PolicyInput, state: None) -> tuple[int, None]:
        return self.plan[min(inp.chunk_index, len(self.plan) - 1)], state
