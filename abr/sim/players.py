"""The players the origin's guidance is for, at chunk level: hls.js and dash.js.

Each is a :class:`~cadenza.abr.sim.session.Policy` and may run guided
(``hlsjs+cadenza``, ``dashjs+cadenza``): it then honours what the origin's
guidance puts in the channels players read (the per-session manifest's first
variant and cap, and dash.js's blend of CMSD ``etp``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cadenza.abr.estimator import DEFAULT_ESTIMATE_BPS, DualEwma
from cadenza.abr.policy import blend_etp, highest_at_or_below
from cadenza.abr.sim.session import Measurement, PolicyInput, PolicyName, SessionSetup


def capped_top(setup: SessionSetup, guided: bool) -> int:
    """The highest rung a client may pick: the guidance cap when guided."""
    if guided and setup.guidance is not None:
        return setup.guidance.max_index
    return len(setup.ladder_bps) - 1


@dataclass(frozen=True, slots=True)
class BolaParams:
    """BOLA's control parameters as dash.js's BolaRule derives them."""

    utilities: tuple[float, ...]
    vp: float
    gp: float


def bola_params(
    ladder_bps: Sequence[int],
    stable_buffer_s: float = 12.0,
    min_buffer_s: float = 10.0,
    per_level_s: float = 2.0,
) -> BolaParams:
    """Utilities ``u_m = ln(R_m / R_0) + 1`` and V, γp for the buffer target.

    BOLA (Spiteri et al., INFOCOM 2016) uses ``ln(R_m / R_0)``; dash.js adds 1
    so the lowest rung has utility 1.  The buffer target is
    ``max(stable_buffer_s, min_buffer_s + per_level_s · levels)``; γp is set so
    the top rung wins at the target and V so the lowest wins below
    ``min_buffer_s``: ``γp = (u_max − 1) / (target / min_buffer − 1)``,
    ``V = min_buffer / γp``.
    """
    utilities = tuple(math.log(bitrate / ladder_bps[0]) + 1.0 for bitrate in ladder_bps)
    if len(ladder_bps) == 1:
        return BolaParams(utilities, vp=min_buffer_s, gp=1.0)
    target_s = max(stable_buffer_s, min_buffer_s + per_level_s * len(ladder_bps))
    gp = (utilities[-1] - 1.0) / (target_s / min_buffer_s - 1.0)
    return BolaParams(utilities, vp=min_buffer_s / gp, gp=gp)


def bola_choice(ladder_bps: Sequence[int], buffer_s: float, params: BolaParams) -> int:
    """The rung maximising ``(V · (u_m + γp) − buffer) / R_m``."""
    scores = [
        (params.vp * (utility + params.gp) - buffer_s) / bitrate
        for utility, bitrate in zip(params.utilities, ladder_bps, strict=True)
    ]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


@dataclass(frozen=True, slots=True)
class HlsJsState:
    estimator: DualEwma
    samples: int
    start_index: int
    top_index: int


@dataclass(frozen=True, slots=True)
class HlsJs:
    """hls.js's default ABR controller at chunk level.

    A :class:`DualEwma` (3 s / 9 s half-lives, 500 kb/s before any sample) of
    each fragment's size over its load time; the next level is the highest
    whose bitrate is below the estimate × ``abrBandWidthFactor`` (0.95) if it
    is not above the current level, × ``abrBandWidthUpFactor`` (0.7) if it
    is.  The first fragment is of the manifest's first variant.  Guided
    (``hlsjs+cadenza``), the per-session manifest lists the guidance start
    rung first and nothing above the guidance cap.  Not modelled: mid-fragment
    abandonment (``_abandonRulesCheck``).
    """

    guided: bool = False
    bw_factor: float = 0.95
    bw_up_factor: float = 0.7
    default_bps: float = DEFAULT_ESTIMATE_BPS

    @property
    def name(self) -> str:
        return (PolicyName.HLSJS_CADENZA if self.guided else PolicyName.HLSJS).value

    def start(self, setup: SessionSetup) -> HlsJsState:
        start = 0
        if self.guided and setup.guidance is not None:
            start = setup.guidance.start_index
        return HlsJsState(
            estimator=DualEwma.create(default_bps=self.default_bps),
            samples=0,
            start_index=start,
            top_index=capped_top(setup, self.guided),
        )

    def choose(self, inp: PolicyInput, state: HlsJsState) -> tuple[int, HlsJsState]:
        estimator = state.estimator
        for measurement in inp.history[state.samples :]:
            estimator = estimator.sample_download(measurement.download_s, measurement.size_bytes)
        state = replace(state, estimator=estimator, samples=len(inp.history))
        if inp.last_index is None:
            return state.start_index, state
        estimate = estimator.estimate_bps()
        chosen = 0
        for index in range(state.top_index + 1):
            factor = self.bw_factor if index <= inp.last_index else self.bw_up_factor
            if inp.ladder_bps[index] < estimate * factor:
                chosen = index
        return chosen, state


@dataclass(frozen=True, slots=True)
class DashJsState:
    use_bola: bool
    start_index: int
    top_index: int
    origin: DualEwma | None  # the origin's estimator of this session (guided only)
    origin_samples: int
    bola: BolaParams
    prior_bps: float = 0.0
    prior_confidence: float = 0.0


@dataclass(frozen=True, slots=True)
class DashJsDynamic:
    """dash.js's DYNAMIC ABR strategy at chunk level.

    ThroughputRule while the buffer is low: the mean of the last 4 throughput
    samples × 0.9 (``bandwidthSafetyFactor``), highest rung at or below it.
    BolaRule once the buffer reaches 18 s, back to throughput below 9 s.
    BOLA as in dash.js: see :func:`bola_params`; an upswitch past the last
    rung is limited to what the throughput rule allows (dash.js's
    oscillation guard).  The first chunk is the highest rung at or below the
    audio default initial bitrate, 100 kb/s.  Guided (``dashjs+cadenza``):
    the MPD has no representation above the guidance cap (so BOLA's utilities
    are of the capped ladder), the first chunk is the guidance start rung, and
    the throughput estimate is blended 50/50 (``etpWeightRatio`` 0.5) with
    the origin's ``etp``: the player's own throughput as its CMCD ``mtp``
    reports it, moved towards the population prior as far as
    :func:`cadenza.abr.policy.blend_etp` allows (the origin's DualEwma of the
    session's measurements gives the session's confidence).
    """

    guided: bool = False
    safety_factor: float = 0.9
    window: int = 4
    initial_bps: float = 100_000.0
    bola_on_s: float = 18.0
    bola_off_s: float = 9.0
    etp_weight: float = 0.5

    @property
    def name(self) -> str:
        return (PolicyName.DASHJS_CADENZA if self.guided else PolicyName.DASHJS_DYNAMIC).value

    def start(self, setup: SessionSetup) -> DashJsState:
        top = capped_top(setup, self.guided)
        guidance = setup.guidance if self.guided else None
        if guidance is not None:
            start = guidance.start_index
            origin: DualEwma | None = DualEwma.create(default_bps=guidance.estimate_bps)
        else:
            start = min(highest_at_or_below(setup.ladder_bps, self.initial_bps), top)
            origin = None
        return DashJsState(
            use_bola=False,
            start_index=start,
            top_index=top,
            origin=origin,
            prior_bps=guidance.estimate_bps if guidance is not None else 0.0,
            prior_confidence=guidance.confidence if guidance is not None else 0.0,
            origin_samples=0,
            bola=bola_params(setup.ladder_bps[: top + 1]),
        )

    def throughput_bps(self, history: Sequence[Measurement], state: DashJsState) -> float:
        """The throughput the rules use: the client's, blended with ``etp`` if guided."""
        recent = history[-self.window :]
        own = sum(m.throughput_bps for m in recent) / len(recent)
        if state.origin is None:
            return own
        etp = blend_etp(own, state.origin.confidence(), state.prior_bps, state.prior_confidence)
        return (1.0 - self.etp_weight) * own + self.etp_weight * etp

    def choose(self, inp: PolicyInput, state: DashJsState) -> tuple[int, DashJsState]:
        if state.origin is not None:
            origin = state.origin
            for measurement in inp.history[state.origin_samples :]:
                origin = origin.sample_download(measurement.download_s, measurement.size_bytes)
            state = replace(state, origin=origin, origin_samples=len(inp.history))
        if inp.last_index is None or not inp.history:
            return state.start_index, state
        if state.use_bola and inp.buffer_s < self.bola_off_s:
            state = replace(state, use_bola=False)
        elif not state.use_bola and inp.buffer_s >= self.bola_on_s:
            state = replace(state, use_bola=True)
        ladder = inp.ladder_bps[: state.top_index + 1]
        by_throughput = highest_at_or_below(
            ladder, self.throughput_bps(inp.history, state) * self.safety_factor
        )
        if not state.use_bola:
            return by_throughput, state
        chosen = bola_choice(ladder, inp.buffer_s, state.bola)
        last = min(inp.last_index, state.top_index)
        if chosen > last:
            chosen = min(chosen, max(by_throughput, last))
        return chosen, state
