"""dash.js 5.2.1's default ABR for audio at chunk level (``docs/player-models.md`` section 2).

* Start: the audio initial bitrate (100 kb/s unless the MPD's
  ServiceDescription or a setting gives one): the highest rung at or below it.
* Throughput: min of two EWMAs (3 s / 8 s half-lives, weight 1.5 per
  download second) of ``bytes / (responseEnd − responseStart)`` in whole
  kb/s (Resource Timing: the first byte's latency excluded); rules use it ×0.9.
* Rules, one decision per segment, the lowest request wins:
  ThroughputRule (buffer < 12 s) or BolaRule (from 12 s until < 6 s),
  InsufficientBufferRule (from the third segment), SwitchHistoryRule; for
  10 s after an abandonment only down-switches.  AbandonRequestsRule watches
  each download on 50 ms progress events.
* Buffer target: 18 s below the top rung, 30 s at it (60 s for content of
  10 min or more); the next request goes out when buffer + segment < target.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from cadenza.abr.estimator import DualEwma
from cadenza.abr.policy import highest_at_or_below
from cadenza.abr.sim.bola import (
    MINIMUM_BUFFER_S,
    PLACEHOLDER_DECAY,
    BolaParams,
    bola_choice,
    bola_max_buffer_s,
    bola_min_buffer_s,
    bola_params,
)
from cadenza.abr.sim.guided import capped_top, start_hint
from cadenza.abr.sim.link import FloatArray
from cadenza.abr.sim.session import Flight, PolicyInput, PolicyName, SessionSetup


class BolaPhase(enum.Enum):
    STARTUP = "startup"
    STEADY = "steady"


@dataclass(frozen=True, slots=True)
class DashJsState:
    estimator: DualEwma
    samples: int
    start_index: int
    top_index: int
    bola: BolaParams
    # The representations' @bandwidth, up to the top one left (rules compare with these).
    ladder_bps: tuple[int, ...]
    use_bola: bool = False
    phase: BolaPhase = BolaPhase.STARTUP
    placeholder_s: float = 0.0
    # (from, to) of the last quality checks, oldest first (SwitchRequestHistory).
    switches: tuple[tuple[int, int], ...] = ()
    last_decision_s: float = 0.0
    # The buffer at the last decision if playback had started (inf before).
    last_buffer_s: float = math.inf
    down_only_until_s: float = -math.inf


@dataclass(frozen=True, slots=True)
class DashJsDynamic:
    """dash.js's default ABR for audio; see the module docstring.

    Guided (``dashjs+cadenza``): the MPD lists no representation above the
    guidance cap (ServiceDescription ``max`` does the same), so BOLA's
    utilities are of the capped ladder; its ServiceDescription ``target``
    sets the initial bitrate when the origin gives a start hint.  CMSD
    ``etp`` is not used: the default player ignores it.
    """

    guided: bool = False
    safety_factor: float = 0.9
    initial_bps: float = 100_000.0
    fast_half_life_s: float = 3.0
    slow_half_life_s: float = 8.0
    weight_per_s: float = 1.5
    hybrid_switch_s: float = 12.0
    buffer_time_default_s: float = 18.0
    buffer_at_top_s: float = 30.0
    buffer_at_top_long_s: float = 60.0
    long_form_s: float = 600.0
    stall_threshold_s: float = 0.3
    insufficient_factor: float = 0.7
    segment_ignore_count: int = 2
    history_size: int = 8
    drop_threshold: float = 0.075
    abandon_multiplier: float = 1.8
    abandon_after_s: float = 0.5
    abandon_min_traces: int = 6
    progress_interval_s: float = 0.05
    abandon_timeout_s: float = 10.0
    exclude_latency: bool = True
    abandon_enabled: bool = True
    # Not from the source, for measuring deviations: @bandwidth (the peak) over
    # the CBR bitrate the simulated chunks have.
    peak_factor: float = 1.0

    @property
    def name(self) -> str:
        return (PolicyName.DASHJS_CADENZA if self.guided else PolicyName.DASHJS_DYNAMIC).value

    def representations_bps(self, setup: SessionSetup) -> tuple[int, ...]:
        """The ``@bandwidth`` dash.js compares with: the MPD declares each rung's peak."""
        return tuple(round(bitrate * self.peak_factor) for bitrate in setup.ladder_bps)

    def top_index(self, setup: SessionSetup) -> int:
        """The highest representation left: guided, the per-session MPD lists none
        above the cap, and OperatingBandwidth ``max`` drops any whose
        ``@bandwidth`` exceeds it (``AbrController.js:367-391``)."""
        top = capped_top(setup, self.guided)
        if self.guided and setup.guidance is not None:
            bands = self.representations_bps(setup)
            limit = setup.guidance.max_bitrate_bps
            top = max([i for i in range(top + 1) if bands[i] <= limit], default=0)
        return top

    def start(self, setup: SessionSetup) -> DashJsState:
        top = self.top_index(setup)
        ladder = self.representations_bps(setup)[: top + 1]
        hint = start_hint(setup) if self.guided else None
        if hint is not None and setup.guidance is not None:
            # OperatingBandwidth target: initialBitrate, highest @bandwidth at or below it.
            start = highest_at_or_below(ladder, setup.guidance.start_bitrate_bps)
        else:
            start = highest_at_or_below(ladder, self.initial_bps)
        return DashJsState(
            estimator=DualEwma.create(self.fast_half_life_s, self.slow_half_life_s, math.nan),
            samples=0,
            start_index=start,
            top_index=top,
            bola=bola_params(ladder, self.buffer_time_default_s),
            ladder_bps=ladder,
        )

    def request_below_s(self, setup: SessionSetup, rung: int) -> float:
        """``_shouldBuffer``: request while buffer + segment < the target."""
        if rung >= self.top_index(setup):
            content_s = setup.chunk_count * setup.segment_duration_s
            target_s = (
                self.buffer_at_top_long_s if content_s >= self.long_form_s else self.buffer_at_top_s
            )
        else:
            target_s = self.buffer_time_default_s
        return max(target_s - setup.segment_duration_s, 0.0)

    def _learn(self, inp: PolicyInput, state: DashJsState) -> tuple[DashJsState, float, bool]:
        """Sample the new downloads; also when the last one arrived and whether it stalled."""
        estimator = state.estimator
        elapsed_s = 0.0
        for measurement in inp.history[state.samples :]:
            elapsed_s += measurement.download_s
            if measurement.abandoned:
                continue  # an aborted XHR stores no throughput
            time_s = measurement.transfer_s if self.exclude_latency else measurement.download_s
            if time_s < 0.005:
                continue  # taken for a cache hit
            kbps = round(8.0 * measurement.size_bytes / (1000.0 * time_s))
            estimator = estimator.sample_rate(kbps * 1000.0, self.weight_per_s * time_s)
        arrival_s = state.last_decision_s + elapsed_s
        stalled = state.last_buffer_s < elapsed_s
        state = replace(state, estimator=estimator, samples=len(inp.history))
        return state, arrival_s, stalled

    def throughput_bps(self, state: DashJsState) -> float:
        """``getAverageThroughput`` (NaN before the first sample)."""
        if not state.estimator.can_estimate:
            return math.nan
        return state.estimator.estimate_bps()

    def choose(self, inp: PolicyInput, state: DashJsState) -> tuple[int, DashJsState]:
        state, arrival_s, stalled = self._learn(inp, state)
        if inp.last_index is None:
            return state.start_index, replace(state, last_decision_s=inp.now_s)
        ladder = state.ladder_bps
        current = min(inp.last_index, state.top_index)
        buffer_s = inp.buffer_s
        # The hand-over follows every BUFFER_LEVEL metric, not just decisions: the
        # buffer was lowest just before the last append, highest just after it.
        lowest_s = state.last_buffer_s - (arrival_s - state.last_decision_s)
        highest_s = buffer_s + max(inp.now_s - arrival_s, 0.0)
        use_bola = state.use_bola
        if use_bola and min(lowest_s, buffer_s) < 0.5 * self.hybrid_switch_s:
            use_bola = False
        if not use_bola and highest_s >= self.hybrid_switch_s:
            use_bola = buffer_s >= 0.5 * self.hybrid_switch_s
        state = replace(state, use_bola=use_bola)
        if state.phase is BolaPhase.STEADY:
            state = self._settle_placeholder(inp, state, arrival_s, stalled, current)
        average = self.throughput_bps(state)
        safe = (
            round(average / 1000.0) * 1000.0 * self.safety_factor if average == average else average
        )
        requests: list[int] = []
        if state.use_bola:
            chosen, state = self._bola(inp, state, ladder, safe, arrival_s, current)
            if chosen is not None:
                requests.append(chosen)
        elif safe == safe and buffer_s > self.stall_threshold_s:
            requests.append(highest_at_or_below(ladder, safe))
        if inp.chunk_index >= self.segment_ignore_count and average == average:
            if inp.playing and buffer_s <= self.stall_threshold_s:
                requests.append(0)
            else:
                cap_bps = average * self.insufficient_factor * buffer_s / inp.segment_duration_s
                if cap_bps > 0:
                    requests.append(highest_at_or_below(ladder, cap_bps))
        history = self.switch_history_request(state.switches, len(ladder))
        if history is not None:
            requests.append(history)
        last_buffer_s = buffer_s if inp.playing else math.inf
        state = replace(state, last_decision_s=inp.now_s, last_buffer_s=last_buffer_s)
        if not requests:
            return current, state
        chosen = min(requests)
        state = replace(state, switches=(*state.switches, (current, chosen))[-self.history_size :])
        if chosen > current and inp.now_s < state.down_only_until_s:
            chosen = current
        return chosen, state

    def _bola(
        self,
        inp: PolicyInput,
        state: DashJsState,
        ladder: Sequence[int],
        safe_bps: float,
        arrival_s: float,
        current: int,
    ) -> tuple[int | None, DashJsState]:
        """BolaRule: STARTUP by throughput, then STEADY by buffer + placeholder."""
        params = state.bola
        buffer_s = inp.buffer_s
        placeholder = state.placeholder_s
        if state.phase is BolaPhase.STARTUP:
            if safe_bps != safe_bps:
                return None, state
            chosen = highest_at_or_below(ladder, safe_bps)
            placeholder = max(0.0, bola_min_buffer_s(ladder, params, chosen) - buffer_s)
            phase = BolaPhase.STEADY if buffer_s >= inp.segment_duration_s else state.phase
            return chosen, replace(state, phase=phase, placeholder_s=placeholder)
        # _updatePlaceholderBuffer: the wait since the last segment finished.
        placeholder += max(inp.now_s - arrival_s, 0.0)
        chosen = bola_choice(ladder, buffer_s + placeholder, params)
        by_throughput = highest_at_or_below(ladder, safe_bps) if safe_bps == safe_bps else 0
        if chosen > current and chosen > by_throughput:
            chosen = by_throughput if by_throughput > current else current
        delay_s = max(0.0, buffer_s + placeholder - bola_max_buffer_s(params, chosen))
        placeholder = placeholder - delay_s if delay_s <= placeholder else 0.0
        return chosen, replace(state, placeholder_s=placeholder)

    def _settle_placeholder(
        self,
        inp: PolicyInput,
        state: DashJsState,
        arrival_s: float,
        stalled: bool,
        current: int,
    ) -> DashJsState:
        """What BolaRule's listeners do to the placeholder whichever rule runs:
        reset on BUFFER_EMPTY; on each new segment (``_checkNewSegment``) decay
        by 0.99 and trim to the last segment's headroom."""
        if stalled:
            return replace(state, placeholder_s=0.0)
        idle_s = max(inp.now_s - arrival_s, 0.0)
        at_request_s = inp.buffer_s + idle_s + (arrival_s - state.last_decision_s)
        headroom_s = max(0.0, bola_max_buffer_s(state.bola, current) - at_request_s)
        return replace(
            state, placeholder_s=min(state.placeholder_s * PLACEHOLDER_DECAY, headroom_s)
        )

    def switch_history_request(
        self, switches: Sequence[tuple[int, int]], levels: int
    ) -> int | None:
        """SwitchHistoryRule over the last checks, keyed by the rung switched from."""
        drops, no_drops = [0] * levels, [0] * levels
        for old, new in switches:
            if old < levels:
                drops[old] += int(new < old)
                no_drops[old] += int(new >= old)
        total_drops = total_no_drops = 0
        for index in range(levels):
            total_drops += drops[index]
            total_no_drops += no_drops[index]
            if (
                total_drops + total_no_drops >= self.history_size
                and (total_drops / total_no_drops if total_no_drops else math.inf * total_drops)
                > self.drop_threshold
            ):
                return index - 1 if index > 0 and drops[index] > 0 else index
        return None

    def abandon(self, flight: Flight, state: DashJsState) -> tuple[float | None, int, DashJsState]:
        """AbandonRequestsRule on each progress event (every 50 ms after the first byte)."""
        if not self.abandon_enabled or flight.rung == 0 or flight.deadline_s is None:
            return None, flight.rung, state
        first_byte_s = flight.request_s + flight.ttfb_s
        step = self.progress_interval_s
        count = math.ceil((flight.arrival_s - first_byte_s) / step)
        if count <= 1:
            return None, flight.rung, state
        events: FloatArray = first_byte_s + step * np.arange(1, count, dtype=np.float64)
        loaded = flight.loaded_bytes(events)
        first_loaded = float(loaded[0])
        rate_kbps = np.round(
            8.0 * (loaded - first_loaded) / np.maximum((events - events[0]) * 1000, 1.0)
        )
        buffer_s = flight.deadline_s - events
        ladder = state.ladder_bps
        for k in range(len(events)):
            if (
                k + 1 < self.abandon_min_traces
                or events[k] - first_byte_s <= self.abandon_after_s
                or buffer_s[k] > self.buffer_time_default_s
                or rate_kbps[k] <= 0
            ):
                continue
            projected_s = flight.size_bytes * 8.0 / float(rate_kbps[k]) / 1000.0
            if projected_s < flight.setup.segment_duration_s * self.abandon_multiplier:
                continue
            target = highest_at_or_below(ladder, float(rate_kbps[k]) * 1000.0)
            remaining = flight.size_bytes - float(loaded[k])
            if remaining > flight.size_bytes * ladder[target] / ladder[flight.rung]:
                # BolaRule deflates its placeholder to where it just picks the new rung.
                want_s = (
                    bola_min_buffer_s(ladder, state.bola, target)
                    if target > 0
                    else MINIMUM_BUFFER_S
                )
                placeholder = min(state.placeholder_s, max(0.0, want_s - float(buffer_s[k])))
                until_s = float(events[k]) + self.abandon_timeout_s
                return (
                    float(events[k]),
                    target,
                    replace(state, down_only_until_s=until_s, placeholder_s=placeholder),
                )
        return None, flight.rung, state
