"""Shaka Player 5.2.12's ``SimpleAbrManager`` for audio at chunk level
(``docs/player-models.md`` section 3).

* Start: ``chooseVariant`` at the 1 Mb/s default estimate (no
  ``navigator.connection`` in a simulator): the highest variant with
  bandwidth ≤ 0.95 × the estimate, 320 kb/s on the AAC ladder.
* Samples are progress chunks, not segments: the fetch plugin reports one
  once more than 100 ms and at least 16 kB have passed since the last, and
  at the end.  The first chunk's clock starts before the request, so it
  carries the round trip.  Chunks under 16 kB are dropped; the estimate (min
  of EWMAs with 2 s / 5 s half-lives) replaces the default only after 128 kB.
* Each chunk may suggest a variant: not before the estimate is good, then at
  most every 8 s (the first at once).  A switch aborts the segment in flight
  if the new variant's segment can be fetched before the buffer runs out, or
  if more bytes remain than the new segment has; the segment is then fetched
  again from the new variant.
* Buffer: fetch while less than ``bufferingGoal`` (10 s) is buffered ahead.

Not modelled: CMSD (on by default in Shaka, but an origin sends it only to
guided sessions), ``navigator.connection.downlink``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from cadenza.abr.estimator import DualEwma
from cadenza.abr.sim.link import bits_by, time_of_bits
from cadenza.abr.sim.session import Flight, PolicyInput, PolicyName, SessionSetup

DEFAULT_BANDWIDTH_BPS: Final = 1e6  # defaultBandwidthEstimate
MIN_BYTES: Final = 16e3  # abr.advanced.minBytes and networking.minBytesForProgressEvents
MIN_TOTAL_BYTES: Final = 128e3  # abr.advanced.minTotalBytes
PROGRESS_INTERVAL_S: Final = 0.1  # http_fetch_plugin: more than 100 ms between reports


def choose_variant(
    ladder_bps: Sequence[int], estimate_bps: float, down: float = 0.95, up: float = 0.85
) -> int:
    """``chooseVariant``: the last variant whose [bw/down, next bw/up] range holds the estimate."""
    chosen = 0
    for index, bitrate in enumerate(ladder_bps):
        upper = ladder_bps[index + 1] / up if index + 1 < len(ladder_bps) else math.inf
        if bitrate / down <= estimate_bps <= upper:
            chosen = index
    return chosen


@dataclass(frozen=True, slots=True)
class ShakaState:
    estimator: DualEwma
    bytes_sampled: float
    current: int
    startup_complete: bool = False
    last_chosen_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Shaka:
    """Shaka's ``SimpleAbrManager`` with default settings; see the module docstring."""

    default_bps: float = DEFAULT_BANDWIDTH_BPS
    fast_half_life_s: float = 2.0
    slow_half_life_s: float = 5.0
    switch_interval_s: float = 8.0
    min_time_to_switch_s: float = 0.0
    downgrade_target: float = 0.95
    upgrade_target: float = 0.85
    buffering_goal_s: float = 10.0
    rebuffering_goal_s: float = 0.0
    cache_threshold_s: float = 0.005

    @property
    def name(self) -> str:
        return PolicyName.SHAKA.value

    def start(self, setup: SessionSetup) -> ShakaState:
        return ShakaState(
            estimator=DualEwma.create(self.fast_half_life_s, self.slow_half_life_s),
            bytes_sampled=0.0,
            current=self._choose(setup.ladder_bps, self.default_bps),
        )

    def _choose(self, ladder_bps: Sequence[int], estimate_bps: float) -> int:
        return choose_variant(ladder_bps, estimate_bps, self.downgrade_target, self.upgrade_target)

    def estimate_bps(self, state: ShakaState) -> float:
        """``getBandwidthEstimate``: the default until 128 kB have been sampled."""
        if state.bytes_sampled < MIN_TOTAL_BYTES:
            return self.default_bps
        return state.estimator.estimate_bps()

    def request_below_s(self, setup: SessionSetup, rung: int) -> float:
        return max(self.buffering_goal_s, self.rebuffering_goal_s)

    def choose(self, inp: PolicyInput, state: ShakaState) -> tuple[int, ShakaState]:
        """The variant chosen so far: Shaka decides on progress chunks (:meth:`abandon`)."""
        return state.current, state

    def abandon(self, flight: Flight, state: ShakaState) -> tuple[float | None, int, ShakaState]:
        """Every progress chunk of ``flight``: sample, maybe switch, maybe abort."""
        ladder = flight.setup.ladder_bps
        segment_s = flight.setup.segment_duration_s
        for at_s, duration_s, size_bytes in progress_chunks(flight):
            if duration_s >= self.cache_threshold_s and size_bytes >= MIN_BYTES:
                rate_bps = 8.0 * size_bytes / duration_s
                state = replace(
                    state,
                    estimator=state.estimator.sample_rate(rate_bps, duration_s),
                    bytes_sampled=state.bytes_sampled + size_bytes,
                )
            chosen, state = self.suggest(ladder, at_s, state)
            if chosen is None or chosen == state.current:
                continue
            state = replace(state, current=chosen)
            if at_s >= flight.arrival_s:
                break
            new_size_bytes = segment_s * ladder[chosen] / 8.0
            fetch_s = new_size_bytes * 8.0 / self.estimate_bps(state)
            if flight.deadline_s is None:
                buffered_s = flight.chunk_index * segment_s
            else:
                buffered_s = max(flight.deadline_s - at_s, 0.0)
            remaining = flight.size_bytes - float(flight.loaded_bytes(np.array([at_s]))[0])
            if fetch_s < buffered_s - self.rebuffering_goal_s or remaining > new_size_bytes:
                return at_s, chosen, state
        return None, flight.rung, state

    def suggest(
        self, ladder: Sequence[int], at_s: float, state: ShakaState
    ) -> tuple[int | None, ShakaState]:
        """``suggestStreams_``: wait for 128 kB, then at most once per switch interval."""
        if not state.startup_complete:
            if state.bytes_sampled < MIN_TOTAL_BYTES:
                return None, state
            shift_s = self.switch_interval_s - self.min_time_to_switch_s
            state = replace(
                state, startup_complete=True, last_chosen_s=state.last_chosen_s - shift_s
            )
        if at_s - state.last_chosen_s < self.switch_interval_s:
            return None, state
        chosen = self._choose(ladder, self.estimate_bps(state))
        return chosen, replace(state, last_chosen_s=at_s)


def progress_chunks(flight: Flight) -> list[tuple[float, float, float]]:
    """``(report time, seconds since the last report, bytes)`` of each progress report.

    A report goes out once more than 100 ms have passed since the last (the
    first counts from the request, so it carries the round trip) and at least
    16 kB have arrived since, and when the last byte arrives.
    """
    link = flight.link
    start_bits = float(bits_by(link, np.array([flight.request_s + flight.ttfb_s]))[0])
    chunks: list[tuple[float, float, float]] = []
    last_s, last_bytes = flight.request_s, 0.0
    while True:
        wanted_bits = start_bits + 8.0 * (last_bytes + MIN_BYTES)
        enough_s = float(time_of_bits(link, np.array([wanted_bits]))[0])
        at_s = max(last_s + PROGRESS_INTERVAL_S + 1e-9, enough_s)
        if last_bytes + MIN_BYTES >= flight.size_bytes or at_s >= flight.arrival_s:
            chunks.append(
                (flight.arrival_s, flight.arrival_s - last_s, flight.size_bytes - last_bytes)
            )
            return chunks
        loaded = float(flight.loaded_bytes(np.array([at_s]))[0])
        chunks.append((at_s, at_s - last_s, loaded - last_bytes))
        last_s, last_bytes = at_s, loaded
