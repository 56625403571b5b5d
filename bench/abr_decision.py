"""Micro benchmark: CPU per origin ABR decision, and bytes per session state.

``.venv/bin/python bench/abr_decision.py`` prints microseconds per
:func:`cadenza.abr.controller.decide_rung` call (table lookup, state update)
against the online robust-MPC search it replaces, and the memory one session's
:class:`~cadenza.abr.controller.ControllerState` holds.  A figure to read, not
a test: nothing asserts on time.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

from cadenza.abr.controller import ControllerState, decide_rung
from cadenza.abr.controller_inputs import Signals
from cadenza.abr.controller_table import DEFAULT_PLAN, decision_table, end_plan, plan_first_rung

LADDER_BPS = (64_000, 128_000, 256_000, 320_000)
SEGMENT_S = 4.0
DECISIONS = 50_000
SESSIONS = 10_000


# A 180 s track of 4 s segments: the last few decisions use the end-of-track plans.
TRACK_SEGMENTS = 45


def _signals(i: int) -> Signals:
    return Signals(
        buffer_ms=(i * 700) % 30_000,
        measured_kbps=100 + (i * 37) % 900,
        encoded_kbps=128,
        object_ms=4000,
        remaining_segments=TRACK_SEGMENTS - i % TRACK_SEGMENTS,
    )


def per_decision_us() -> float:
    inputs = [_signals(i) for i in range(1000)]
    state: ControllerState | None = None
    now_s = 0.0
    start = time.perf_counter()
    for i in range(DECISIONS):
        now_s += 1.5
        _, state = decide_rung(
            LADDER_BPS, state, inputs[i % 1000], now_s, segment_duration_s=SEGMENT_S
        )
    return (time.perf_counter() - start) / DECISIONS * 1e6


def online_us(calls: int = 300) -> float:
    start = time.perf_counter()
    for i in range(calls):
        plan_first_rung(LADDER_BPS, 100_000.0 + 3_000.0 * i, (i % 60) / 2, i % 4, SEGMENT_S)
    return (time.perf_counter() - start) / calls * 1e6


def state_bytes() -> float:
    states: list[ControllerState] = []
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for n in range(SESSIONS):
        state: ControllerState | None = None
        for i in range(8):
            _, state = decide_rung(
                LADDER_BPS, state, _signals(n + i), 1.5 * i, segment_duration_s=SEGMENT_S
            )
        assert state is not None
        states.append(state)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / SESSIONS


def main() -> int:
    start = time.perf_counter()
    decision_table(LADDER_BPS, SEGMENT_S)
    build_s = time.perf_counter() - start
    print(f"table build (once per ladder/segment/config): {build_s * 1000:.0f} ms")
    start = time.perf_counter()
    for remaining in range(1, DEFAULT_PLAN.horizon):
        decision_table(LADDER_BPS, SEGMENT_S, end_plan(DEFAULT_PLAN, remaining))
    end_ms = (time.perf_counter() - start) * 1000
    print(f"end-of-track tables (the plans of 1-4 segments): {end_ms:.0f} ms")
    print(f"decide_rung: {per_decision_us():.1f} us/decision")
    print(f"online robust-MPC search: {online_us():.0f} us/decision")
    print(f"session state: {state_bytes():.0f} bytes/session")
    return 0


if __name__ == "__main__":
    sys.exit(main())
