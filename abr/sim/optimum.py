"""The offline optimum: the QoE_lin-best rung sequence for a whole trace, known in
advance, by dynamic programming with exact Pareto pruning.  No policy can beat it
on the same trace, so it bounds what any policy (guided or not) could gain."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace

import numpy as np

from cadenza.abr.sim.link import FloatArray, IntArray, arrival_times_s, chunk_size_bytes, link_for
from cadenza.abr.sim.session import PolicyInput, PolicyName, SessionSetup


@dataclass(frozen=True, slots=True)
class OfflineState:
    plan: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OfflineOptimal:
    """The QoE_lin-optimal rung sequence for the whole trace, known in advance.

    See :func:`optimal_plan`: exact with respect to this simulator's model
    (no discretisation), so no policy can beat it on the same trace.  It has
    no buffer cap: fetching earlier never delays an arrival, so the uncapped
    optimum bounds every policy whatever its buffer target (hls.js keeps up
    to 600 s of audio).
    """

    @property
    def name(self) -> str:
        return PolicyName.OFFLINE_OPTIMAL.value

    def start(self, setup: SessionSetup) -> OfflineState:
        return OfflineState(optimal_plan(replace(setup, buffer_cap_s=math.inf)))

    def request_below_s(self, setup: SessionSetup, rung: int) -> float:
        return math.inf

    def choose(self, inp: PolicyInput, state: OfflineState) -> tuple[int, OfflineState]:
        return state.plan[inp.chunk_index], state


@dataclass(frozen=True, slots=True)
class _Frontier:
    """Session states after some chunks, all with the same last rung."""

    request_s: FloatArray  # when the next request goes out
    deadline_s: FloatArray  # when playback would run dry (before start: arrival + media)
    value: FloatArray  # Σ q − smoothness so far
    parent_rung: IntArray
    parent_row: IntArray

    def __len__(self) -> int:
        return len(self.value)


def _pareto_rows(request_s: FloatArray, deadline_s: FloatArray, value: FloatArray) -> IntArray:
    """Rows not dominated by another (earlier or equal request, deadline; higher or equal value).

    A state that requests no later, runs dry no later and has no less value
    does at least as well under every continuation: arrivals are monotone in
    request time, and the final penalty is μ·(final deadline − media time).
    """
    order = np.lexsort((-value, deadline_s, request_s))
    stair_d: list[float] = []
    stair_v: list[float] = []
    keep: list[int] = []
    for row in order.tolist():
        d = float(deadline_s[row])
        v = float(value[row])
        right = bisect_right(stair_d, d)
        if right and stair_v[right - 1] >= v:
            continue
        keep.append(row)
        left = bisect_left(stair_d, d)
        end = left
        while end < len(stair_d) and stair_v[end] <= v:
            end += 1
        stair_d[left:end] = [d]
        stair_v[left:end] = [v]
    return np.array(sorted(keep), dtype=np.int64)


def optimal_plan(setup: SessionSetup) -> tuple[int, ...]:
    """The rung sequence maximising QoE_lin on ``setup.trace``.

    Dynamic programming over chunk × last rung whose states carry the exact
    request time, playback deadline and accumulated utility (continuous: the
    resolution is that of float64, not a grid).  Transitions use
    :func:`arrival_times_s`, the simulator's own download model, and the
    simulator's startup and buffer-cap rules.  Between chunks only dominated
    states are dropped (see :func:`_pareto_rows`), which loses nothing, so the
    result is optimal up to floating-point rounding.
    """
    link = link_for(setup.trace)
    ladder = setup.ladder_bps
    rungs = len(ladder)
    segment_s = setup.segment_duration_s
    quality = np.asarray(ladder, dtype=np.float64) / 1e6
    mu = float(quality[-1])
    sizes = [chunk_size_bytes(bitrate, segment_s) for bitrate in ladder]
    chunks = setup.chunk_count
    start_chunks = setup.start_chunks
    empty_i = np.zeros(0, dtype=np.int64)
    frontiers: list[list[_Frontier]] = []
    # Before the first chunk: one state, "previous rung" irrelevant (stored as rung 0).
    current: list[_Frontier] = [
        _Frontier(np.zeros(1), np.zeros(1), np.zeros(1), np.full(1, -1), np.full(1, -1))
    ] + [
        _Frontier(np.zeros(0), np.zeros(0), np.zeros(0), empty_i, empty_i) for _ in range(rungs - 1)
    ]
    best_final: tuple[float, int, int] | None = None
    for n in range(chunks):
        nxt: list[_Frontier] = []
        downloaded = n + 1
        for m in range(rungs):
            parts_request: list[FloatArray] = []
            parts_deadline: list[FloatArray] = []
            parts_value: list[FloatArray] = []
            parts_rung: list[IntArray] = []
            parts_row: list[IntArray] = []
            for prev, frontier in enumerate(current):
                if not len(frontier):
                    continue
                arrival = arrival_times_s(link, frontier.request_s, sizes[m])
                if downloaded <= start_chunks:
                    deadline = arrival + downloaded * segment_s
                else:
                    deadline = np.maximum(arrival, frontier.deadline_s) + segment_s
                if downloaded < start_chunks:
                    request = arrival
                else:
                    request = np.maximum(arrival, deadline - setup.buffer_cap_s)
                switch = 0.0 if n == 0 else abs(float(quality[m] - quality[prev]))
                parts_request.append(request)
                parts_deadline.append(deadline)
                parts_value.append(frontier.value + (float(quality[m]) - switch))
                parts_rung.append(np.full(len(frontier), prev, dtype=np.int64))
                parts_row.append(np.arange(len(frontier), dtype=np.int64))
            if not parts_value:
                nxt.append(_Frontier(np.zeros(0), np.zeros(0), np.zeros(0), empty_i, empty_i))
                continue
            request = np.concatenate(parts_request)
            deadline = np.concatenate(parts_deadline)
            value = np.concatenate(parts_value)
            rung_of = np.concatenate(parts_rung)
            row_of = np.concatenate(parts_row)
            if n == chunks - 1:
                final = value - mu * (deadline - chunks * segment_s)
                row = int(np.argmax(final))
                if best_final is None or final[row] > best_final[0]:
                    best_final = (float(final[row]), m, row)
                keep = np.arange(len(value), dtype=np.int64)
            else:
                keep = _pareto_rows(request, deadline, value)
            nxt.append(
                _Frontier(request[keep], deadline[keep], value[keep], rung_of[keep], row_of[keep])
            )
        frontiers.append(nxt)
        current = nxt
    assert best_final is not None
    plan: list[int] = []
    rung, row = best_final[1], best_final[2]
    for n in range(chunks - 1, -1, -1):
        plan.append(rung)
        frontier = frontiers[n][rung]
        rung, row = int(frontier.parent_rung[row]), int(frontier.parent_row[row])
    plan.reverse()
    return tuple(plan)
