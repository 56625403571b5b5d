"""hls.js 1.7.4's default ABR controller at chunk level (``docs/player-models.md`` section 1).

* Start: ``startLevel`` when the page sets it (the guided variant's only
  start channel), else ``firstAutoLevel``: :func:`find_best_level` at the
  default 500 kb/s estimate, factors 1, a 4 s fetch budget, a 1 s fragment
  (no playlist loaded yet) -- the highest rung at or below 500 kb/s.
* Estimate: min of two EWMAs (3 s / 9 s half-lives, weighted by sample
  seconds) of ``bytes / (load time − min(TTFB, TTFB estimate))``; the TTFB
  estimate is its own EWMA (default 100 ms).
* Next level (``getNextABRAutoLevel``): pass 1 (buffer > 0) with no
  starvation allowed, pass 2 allowing ``min(fragment, 4 s)``, each with the
  0.95 / 0.7 (up-switch) factors and the fetch-time check; neither: the
  lowest rung if below the current, else the current.
* Emergency abandonment (``_abandonRulesCheck``), every 100 ms of a load.
* Buffer target: ``min(max(8 · 60 MB / bitrate, 30 s), 600 s)``, 600 s for audio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from cadenza.abr.estimator import DualEwma, Ewma
from cadenza.abr.sim.guided import capped_top, start_hint
from cadenza.abr.sim.link import FloatArray
from cadenza.abr.sim.session import Flight, PolicyInput, PolicyName, SessionSetup

DEFAULT_ESTIMATE_BPS: Final = 500_000.0  # abrEwmaDefaultEstimate
DEFAULT_TTFB_S: Final = 0.1  # EwmaBandWidthEstimator defaultTTFB
FAST_HALF_LIFE_S: Final = 3.0  # abrEwmaFastVoD
SLOW_HALF_LIFE_S: Final = 9.0  # abrEwmaSlowVoD
MIN_TTFB_WEIGHT: Final = 0.001  # minWeight_


@dataclass(frozen=True, slots=True)
class HlsJsState:
    estimator: DualEwma
    ttfb: Ewma
    samples: int
    start_index: int | None
    top_index: int
    visited: frozenset[int] = frozenset()
    forced_index: int | None = None


def ttfb_estimate_s(ttfb: Ewma) -> float:
    """``getEstimateTTFB``: the EWMA once it has weight, else 100 ms."""
    return ttfb.value() if ttfb.total_weight >= MIN_TTFB_WEIGHT else DEFAULT_TTFB_S


def sample_ttfb(ttfb: Ewma, ttfb_s: float) -> Ewma:
    """``sampleTTFB``: weight √2·e^(−s²/2), value at least 5 ms."""
    weight = math.sqrt(2.0) * math.exp(-(ttfb_s**2) / 2.0)
    return ttfb.sample(weight, max(ttfb_s, 0.005))


def sample_bandwidth(estimator: DualEwma, duration_s: float, size_bytes: float) -> DualEwma:
    """``EwmaBandWidthEstimator.sample``: weight = seconds, floor min(50 ms, bytes/10⁸ s)."""
    if size_bytes <= 0:
        return estimator
    duration_s = max(duration_s, min(0.05, size_bytes / 1e8))
    return estimator.sample_rate(8.0 * size_bytes / duration_s, duration_s)


def fresh_estimator(default_bps: float) -> DualEwma:
    return DualEwma.create(FAST_HALF_LIFE_S, SLOW_HALF_LIFE_S, default_bps)


@dataclass(frozen=True, slots=True)
class LevelSearch:
    """What ``findBestLevel`` reads besides its arguments."""

    ladder_bps: Sequence[int]
    top_index: int
    last_loaded: int
    visited: frozenset[int]
    ttfb_s: float
    fragment_s: float
    playlist_load_s: float = 0.0
    # BANDWIDTH (peak) over AVERAGE-BANDWIDTH; the simulated chunks are CBR at the average.
    peak_factor: float = 1.0


def find_best_level(
    search: LevelSearch,
    bandwidth_bps: float,
    max_index: int,
    starvation_s: float,
    max_starvation_s: float,
    down_factor: float,
    up_factor: float,
) -> int:
    """``findBestLevel``: the highest level whose adjusted bandwidth covers its
    bitrate and whose fetch (TTFB + bits / adjusted bandwidth, plus TTFB and a
    playlist load for a level never loaded) ends within
    ``starvation_s + max_starvation_s``; -1 if none.  The bitrate is
    AVERAGE-BANDWIDTH when no starvation is allowed and the buffer holds two
    fragments, BANDWIDTH otherwise."""
    budget_s = starvation_s + max_starvation_s
    average = max_starvation_s == 0 and starvation_s >= 2 * search.fragment_s
    factor_of_peak = 1.0 if average else search.peak_factor
    for index in range(max_index, -1, -1):
        bitrate = search.ladder_bps[index] * factor_of_peak
        factor = up_factor if index > search.last_loaded else down_factor
        adjusted = factor * bandwidth_bps
        fetch_s = search.ttfb_s + bitrate * search.fragment_s / adjusted
        if index not in search.visited:
            fetch_s += search.ttfb_s + search.playlist_load_s
        if adjusted >= bitrate and fetch_s < budget_s:
            return index
    return -1


@dataclass(frozen=True, slots=True)
class HlsJs:
    """hls.js's ABR at chunk level; see the module docstring.

    Guided (``hlsjs+cadenza``): the page sets ``startLevel`` from the origin's
    start hint (when it gives one), and the per-session playlist lists no
    variant above the guidance cap; nothing else reaches hls.js.
    ``exclude_ttfb`` and ``abandon`` exist to measure what those rules are
    worth (``docs/player-models.md``, remaining deviations).
    """

    guided: bool = False
    bw_factor: float = 0.95
    bw_up_factor: float = 0.7
    default_bps: float = DEFAULT_ESTIMATE_BPS
    max_starvation_s: float = 4.0
    max_buffer_length_s: float = 30.0
    max_buffer_size_bytes: float = 60e6
    max_max_buffer_length_s: float = 600.0
    check_interval_s: float = 0.1
    exclude_ttfb: bool = True
    abandon_enabled: bool = True
    # Not from the source, for measuring deviations: BANDWIDTH / AVERAGE-BANDWIDTH,
    # and the parse time hls.js adds to samples of fragments of 100 kb/s or more.
    peak_factor: float = 1.0
    parse_s: float = 0.0

    @property
    def name(self) -> str:
        return (PolicyName.HLSJS_CADENZA if self.guided else PolicyName.HLSJS).value

    def start(self, setup: SessionSetup) -> HlsJsState:
        hint = start_hint(setup) if self.guided else None
        top = capped_top(setup, self.guided)
        return HlsJsState(
            estimator=fresh_estimator(self.default_bps),
            ttfb=Ewma(SLOW_HALF_LIFE_S),
            samples=0,
            start_index=None if hint is None else min(hint, top),
            top_index=top,
        )

    def request_below_s(self, setup: SessionSetup, rung: int) -> float:
        """``maxBufLen``: hls.js loads whenever the buffer is below it."""
        by_size_s = 8.0 * self.max_buffer_size_bytes / setup.ladder_bps[rung]
        return min(max(by_size_s, self.max_buffer_length_s), self.max_max_buffer_length_s)

    def _learn(self, inp: PolicyInput, state: HlsJsState) -> HlsJsState:
        estimator, ttfb = state.estimator, state.ttfb
        for measurement in inp.history[state.samples :]:
            if measurement.abandoned:
                continue  # sampled when it was abandoned
            ttfb = sample_ttfb(ttfb, measurement.ttfb_s)
            removed_s = min(measurement.ttfb_s, ttfb_estimate_s(ttfb)) if self.exclude_ttfb else 0.0
            fragment_bps = 8.0 * measurement.size_bytes / inp.segment_duration_s
            parse_s = self.parse_s if fragment_bps >= 100_000 else 0.0
            estimator = sample_bandwidth(
                estimator, measurement.download_s - removed_s + parse_s, measurement.size_bytes
            )
        return replace(state, estimator=estimator, ttfb=ttfb, samples=len(inp.history))

    def _search(self, inp: PolicyInput, state: HlsJsState, last_loaded: int) -> LevelSearch:
        return LevelSearch(
            inp.ladder_bps,
            state.top_index,
            last_loaded,
            state.visited,
            ttfb_estimate_s(state.ttfb),
            inp.segment_duration_s,
            peak_factor=self.peak_factor,
        )

    def choose(self, inp: PolicyInput, state: HlsJsState) -> tuple[int, HlsJsState]:
        state = self._learn(inp, state)
        if inp.last_index is None:
            index = state.start_index
            if index is None:
                index = self.first_auto_level(inp, state)
        elif state.forced_index is not None:
            index = state.forced_index
        else:
            index = self.next_auto_level(inp, state, inp.last_index)
        visited = state.visited | {index}
        return index, replace(state, visited=visited, forced_index=None)

    def first_auto_level(self, inp: PolicyInput, state: HlsJsState) -> int:
        """``firstAutoLevel`` before any playlist: a 1 s fragment, every level unloaded."""
        search = LevelSearch(
            inp.ladder_bps,
            state.top_index,
            -1,
            frozenset(),
            ttfb_estimate_s(state.ttfb),
            1.0,
            peak_factor=self.peak_factor,
        )
        estimate = max(state.estimator.estimate_bps(), inp.ladder_bps[0])
        found = find_best_level(search, estimate, state.top_index, 0.0, self.max_starvation_s, 1, 1)
        return max(found, 0)

    def next_auto_level(self, inp: PolicyInput, state: HlsJsState, current: int) -> int:
        search = self._search(inp, state, current)
        buffer_s = max(inp.buffer_s, 0.0)
        estimate = state.estimator.estimate_bps()
        if not state.estimator.can_estimate:
            # After an emergency switch the estimator was reset: firstAutoLevel again.
            found = find_best_level(
                search, estimate, state.top_index, buffer_s / 2, self.max_starvation_s, 1, 1
            )
            return found if found >= 0 else min(current, state.top_index)
        if buffer_s > 0:
            found = find_best_level(
                search, estimate, state.top_index, buffer_s, 0.0, self.bw_factor, self.bw_up_factor
            )
            if found >= 0:
                return found
        allowed_s = min(inp.segment_duration_s, self.max_starvation_s)
        found = find_best_level(
            search,
            estimate,
            state.top_index,
            buffer_s,
            allowed_s,
            self.bw_factor,
            self.bw_up_factor,
        )
        if found >= 0:
            return found
        return 0 if current > 0 else current

    def abandon(self, flight: Flight, state: HlsJsState) -> tuple[float | None, int, HlsJsState]:
        """``_abandonRulesCheck`` every 100 ms of the load, while playing."""
        if not self.abandon_enabled or flight.deadline_s is None or flight.rung <= 1:
            # From level 1 the search for a lower level finds none (it stops above level 0).
            return None, flight.rung, state
        return abandon_check(self, flight, state)


def abandon_check(
    player: HlsJs, flight: Flight, state: HlsJsState
) -> tuple[float | None, int, HlsJsState]:
    """The first 100 ms tick at which hls.js gives up on ``flight``, and what follows.

    At each tick after max(TTFB estimate, half the fragment) of loading: the
    time to finish at the observed rate must exceed the buffer, and a lower
    level's whole fetch must fit in min(buffer, fragment + TTFB) (the search
    stops above level 0: failing, it names level 0 with level 1's time) and
    beat finishing, within 10 fragments.  Then the partial load is sampled,
    the estimator reset to that level's bitrate if 0.7 × the estimate exceeds
    it, and the load aborted at once if finishing takes more than twice the
    alternative, else after the alternative's time if still loading.  An abort
    refetches at level 0 with the estimator reset to its bitrate; a switch
    to level 0 never aborts, it only forces the next fragment's level.
    """
    assert flight.deadline_s is not None
    ladder = flight.setup.ladder_bps
    peak = [bitrate * player.peak_factor for bitrate in ladder]  # levels[i].maxBitrate
    fragment_s = flight.setup.segment_duration_s
    ttfb_est_s = ttfb_estimate_s(state.ttfb)
    bw_est = state.estimator.estimate_bps()
    first_s = flight.request_s + max(ttfb_est_s, fragment_s / 2)
    step = player.check_interval_s
    count = math.ceil((flight.arrival_s - flight.request_s) / step)
    ticks: FloatArray = flight.request_s + step * np.arange(1, count, dtype=np.float64)
    ticks = ticks[(ticks > first_s) & (ticks < flight.arrival_s)]
    if not len(ticks):
        return None, flight.rung, state
    loaded = flight.loaded_bytes(ticks)
    loading_s = ticks - flight.request_s
    first_byte = loaded > 0
    streaming_s = np.where(first_byte, loading_s - flight.ttfb_s, loading_s)
    short = first_byte & (streaming_s < 1.0)
    streaming_s = np.where(short, np.minimum(loading_s, loaded * 8.0 / bw_est), streaming_s)
    rate = np.where(first_byte, loaded / np.maximum(streaming_s, 1e-9), 0.0)  # bytes/s
    finish_s = np.where(
        rate > 0,
        (flight.size_bytes - loaded) / np.maximum(rate, 1e-9),
        flight.size_bytes * 8.0 / bw_est + ttfb_est_s,
    )
    starvation_s = np.maximum(flight.deadline_s - ticks, 0.0)
    bwe = np.where(rate > 0, rate * 8.0, bw_est)
    search = LevelSearch(
        ladder,
        state.top_index,
        flight.rung,
        state.visited,
        ttfb_est_s,
        fragment_s,
        peak_factor=player.peak_factor,
    )
    for k in np.flatnonzero(finish_s > starvation_s).tolist():
        next_index, next_s = 0, math.inf
        for level in range(flight.rung - 1, 0, -1):
            next_s = ttfb_est_s + fragment_s * peak[level] / float(bwe[k])
            if level not in state.visited:
                next_s += ttfb_est_s
            if next_s < min(float(starvation_s[k]), fragment_s + ttfb_est_s):
                next_index = level
                break
        if next_s >= float(finish_s[k]) or next_s > 10 * fragment_s:
            continue
        estimator, ttfb = state.estimator, state.ttfb
        if first_byte[k]:
            removed_s = min(ttfb_est_s, flight.ttfb_s)
            estimator = sample_bandwidth(
                estimator, float(loading_s[k]) - removed_s, float(loaded[k])
            )
        else:
            ttfb = sample_ttfb(ttfb, float(loading_s[k]))
        if estimator.estimate_bps() * player.bw_up_factor > peak[next_index]:
            estimator, ttfb = fresh_estimator(peak[next_index]), Ewma(SLOW_HALF_LIFE_S)
        best = find_best_level(
            search, peak[next_index], next_index, 0.0, float(starvation_s[k]), 1, 1
        )
        if best >= 0:
            next_index = best
        state = replace(state, estimator=estimator, ttfb=ttfb)
        abort_s = float(ticks[k]) if float(finish_s[k]) > 2 * next_s else float(ticks[k]) + next_s
        if next_index > 0 and abort_s < flight.arrival_s:
            lowest = peak[0]
            state = replace(
                state,
                estimator=fresh_estimator(lowest),
                ttfb=Ewma(SLOW_HALF_LIFE_S),
                visited=state.visited | {0},
            )
            return abort_s, 0, state
        return None, flight.rung, replace(state, forced_index=next_index)
    return None, flight.rung, state
