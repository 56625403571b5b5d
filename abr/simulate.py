"""A trace-driven, chunk-level ABR player simulator, the policies it runs, and QoE.

Model (one session):

* The content is ``ceil(content_duration_s / segment_duration_s)`` chunks.  A
  chunk at ``bitrate`` is ``round(bitrate · segment_duration_s / 8)`` bytes (CBR).
* Requests are sequential.  A request made at ``t`` waits one RTT, then
  receives bits at the trace's throughput (integrated exactly over the
  piecewise-constant trace, looping it when it runs out): see
  :func:`arrival_times_s`.  The client measures ``size / (arrival − t)``, RTT
  included, as players do.
* Playback starts when ``startup_threshold_s`` of media has arrived (one chunk
  by default); that moment is the startup delay.  After it, a chunk that
  arrives after the buffer ran dry stalls playback for the difference.
* After a chunk arrives the buffer may exceed ``buffer_cap_s``; the client
  then waits, playing, until it is back at the cap before the next request.

Policies are frozen dataclasses with the state passed in and returned
explicitly (:class:`Policy`); the simulator owns nothing else.  Every number
here is deterministic: no randomness, no clocks.

QoE (:func:`qoe_lin`) is the linear QoE of Pensieve (Mao et al., SIGCOMM 2017)
and robust MPC (Yin et al., SIGCOMM 2015); :func:`qoe_perceptual` swaps the
bitrate utility for a saturating one.  Both charge the startup delay as
rebuffering, as Pensieve does (its first chunk is downloaded on an empty
buffer).
"""

from __future__ import annotations

import enum
import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from cadenza.abr.estimator import DEFAULT_ESTIMATE_BPS, DualEwma
from cadenza.abr.policy import (
    DEFAULT_POLICY,
    Guidance,
    PolicyConfig,
    Population,
    blend_etp,
    decide,
    highest_at_or_below,
)
from cadenza.abr.traces import Trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# The AAC rungs of the default packaging ladder.
DEFAULT_AUDIO_LADDER_BPS: Final = (64_000, 128_000, 256_000, 320_000)
DEFAULT_SEGMENT_DURATION_S: Final = 4.0
DEFAULT_CONTENT_DURATION_S: Final = 180.0
DEFAULT_BUFFER_CAP_S: Final = 30.0
# Perceptual utility: 1 − exp(−R / R0); 64 kb/s gives 0.63, 128 kb/s 0.86, 256 kb/s 0.98.
PERCEPTUAL_R0_BPS: Final = 64_000.0
# Leave-one-out population priors use each session's mean over its first minute.
POPULATION_WINDOW_S: Final = 60.0
# Relative tolerance when comparing floating-point QoE.
QOE_TOLERANCE: Final = 1e-9


class PolicyName(enum.StrEnum):
    HLSJS = "hlsjs"
    DASHJS_DYNAMIC = "dashjs-dynamic"
    BBA = "bba"
    ROBUST_MPC = "robust-mpc"
    OFFLINE_OPTIMAL = "offline-optimal"
    HLSJS_CADENZA = "hlsjs+cadenza"
    DASHJS_CADENZA = "dashjs+cadenza"


# ---------------------------------------------------------------------------
# The link: exact integration of a piecewise-constant trace.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Link:
    """A trace prepared for integration: ``cum_bits[i]`` bits have arrived by ``bounds_s[i]``."""

    name: str
    rtt_s: float
    period_s: float
    bounds_s: FloatArray
    rates_bps: FloatArray
    cum_bits: FloatArray

    @property
    def bits_per_period(self) -> float:
        return float(self.cum_bits[-1])


@lru_cache(maxsize=256)
def link_for(trace: Trace) -> Link:
    """The integration tables of ``trace`` (cached per trace)."""
    starts = np.asarray(trace.times_s, dtype=np.float64) - trace.times_s[0]
    bounds = np.append(starts, trace.period_s)
    rates = np.asarray(trace.throughput_bps, dtype=np.float64)
    cum = np.concatenate(([0.0], np.cumsum(rates * np.diff(bounds))))
    return Link(trace.name, trace.rtt_s, trace.period_s, bounds, rates, cum)


def bits_by(link: Link, at_s: FloatArray) -> FloatArray:
    """Bits the link has delivered from time 0 to each ``at_s`` (the trace looped)."""
    laps = np.floor(at_s / link.period_s)
    within = at_s - laps * link.period_s
    last = len(link.rates_bps) - 1
    index = np.clip(np.searchsorted(link.bounds_s, within, side="right") - 1, 0, last)
    partial = link.cum_bits[index] + link.rates_bps[index] * (within - link.bounds_s[index])
    result: FloatArray = laps * link.bits_per_period + partial
    return result


def time_of_bits(link: Link, bits: FloatArray) -> FloatArray:
    """The earliest time by which the link has delivered ``bits`` (each > 0)."""
    total = link.bits_per_period
    laps = np.maximum(np.ceil(bits / total) - 1.0, 0.0)
    rest = np.clip(bits - laps * total, np.finfo(np.float64).tiny, total)
    last = len(link.rates_bps) - 1
    index = np.clip(np.searchsorted(link.cum_bits, rest, side="left") - 1, 0, last)
    rate = link.rates_bps[index]
    safe_rate = np.where(rate > 0, rate, 1.0)
    offset = np.where(rate > 0, (rest - link.cum_bits[index]) / safe_rate, 0.0)
    result: FloatArray = laps * link.period_s + link.bounds_s[index] + offset
    return result


def arrival_times_s(link: Link, request_s: FloatArray, size_bytes: float) -> FloatArray:
    """When a ``size_bytes`` object requested at each ``request_s`` has fully arrived.

    One RTT passes before the first bit; then the object takes the trace's
    throughput from that moment on.  Later requests never arrive earlier.
    """
    first_bit_s = request_s + link.rtt_s
    done = time_of_bits(link, bits_by(link, first_bit_s) + 8.0 * size_bytes)
    result: FloatArray = np.maximum(done, first_bit_s)
    return result


def download_time_s(trace: Trace, request_s: float, size_bytes: float) -> float:
    """Seconds from request to last byte for one object requested at ``request_s``."""
    link = link_for(trace)
    arrival = arrival_times_s(link, np.array([request_s], dtype=np.float64), size_bytes)
    return float(arrival[0]) - request_s


def chunk_size_bytes(bitrate_bps: float, segment_duration_s: float) -> int:
    """Bytes of one CBR chunk."""
    return round(bitrate_bps * segment_duration_s / 8.0)


# ---------------------------------------------------------------------------
# What policies see and return.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """One completed chunk download as the client saw it."""

    size_bytes: int
    download_s: float

    @property
    def throughput_bps(self) -> float:
        return 8.0 * self.size_bytes / self.download_s


@dataclass(frozen=True, slots=True)
class SessionSetup:
    """Fixed for a session.  Only the offline oracle may read ``trace``."""

    ladder_bps: tuple[int, ...]
    segment_duration_s: float
    chunk_count: int
    buffer_cap_s: float
    startup_threshold_s: float
    trace: Trace
    guidance: Guidance | None = None

    @property
    def start_chunks(self) -> int:
        """Chunks that must arrive before playback starts."""
        needed = math.ceil(self.startup_threshold_s / self.segment_duration_s - 1e-9)
        return min(max(needed, 1), self.chunk_count)


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """What a policy knows when it picks the rung of chunk ``chunk_index``."""

    chunk_index: int
    buffer_s: float
    playing: bool
    last_index: int | None
    history: tuple[Measurement, ...]
    now_s: float
    setup: SessionSetup

    @property
    def ladder_bps(self) -> tuple[int, ...]:
        return self.setup.ladder_bps

    @property
    def segment_duration_s(self) -> float:
        return self.setup.segment_duration_s

    @property
    def trace(self) -> Trace:
        return self.setup.trace


S = TypeVar("S")


class Policy(Protocol[S]):
    """A rate-adaptation policy; pure: the state goes in and comes back out."""

    @property
    def name(self) -> str: ...

    def start(self, setup: SessionSetup) -> S: ...

    def choose(self, inp: PolicyInput, state: S) -> tuple[int, S]: ...


# ---------------------------------------------------------------------------
# The simulator.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    index: int
    rung: int
    bitrate_bps: int
    size_bytes: int
    request_s: float
    download_s: float
    throughput_bps: float
    buffer_before_s: float
    stall_s: float
    wait_s: float


@dataclass(frozen=True, slots=True)
class SessionResult:
    trace_name: str
    policy: str
    ladder_bps: tuple[int, ...]
    segment_duration_s: float
    chunks: tuple[ChunkRecord, ...]
    startup_s: float
    rebuffer_s: float
    end_s: float = 0.0

    @property
    def rungs(self) -> tuple[int, ...]:
        return tuple(chunk.rung for chunk in self.chunks)

    @property
    def playback_s(self) -> float:
        return len(self.chunks) * self.segment_duration_s


def _check_ladder(ladder_bps: Sequence[int]) -> tuple[int, ...]:
    ladder = tuple(int(bitrate) for bitrate in ladder_bps)
    if not ladder:
        raise ValueError("the ladder is empty")
    if any(bitrate <= 0 for bitrate in ladder) or list(ladder) != sorted(set(ladder)):
        raise ValueError("ladder_bps must be positive and strictly ascending")
    return ladder


def make_setup(
    trace: Trace,
    ladder_bps: Sequence[int],
    *,
    segment_duration_s: float = DEFAULT_SEGMENT_DURATION_S,
    content_duration_s: float = DEFAULT_CONTENT_DURATION_S,
    buffer_cap_s: float = DEFAULT_BUFFER_CAP_S,
    startup_threshold_s: float | None = None,
    guide: Guidance | None = None,
) -> SessionSetup:
    """Validate the session parameters (``startup_threshold_s`` None: one segment)."""
    ladder = _check_ladder(ladder_bps)
    threshold_s = segment_duration_s if startup_threshold_s is None else startup_threshold_s
    if segment_duration_s <= 0 or content_duration_s <= 0:
        raise ValueError("segment and content durations must be positive")
    if buffer_cap_s < segment_duration_s:
        raise ValueError("buffer_cap_s must hold at least one segment")
    if not 0 < threshold_s <= max(content_duration_s, segment_duration_s):
        raise ValueError("startup_threshold_s must be positive and within the content")
    if guide is not None and not 0 <= guide.start_index <= guide.max_index < len(ladder):
        raise ValueError("guidance does not fit the ladder")
    chunks = max(1, math.ceil(content_duration_s / segment_duration_s - 1e-9))
    return SessionSetup(
        ladder_bps=ladder,
        segment_duration_s=segment_duration_s,
        chunk_count=chunks,
        buffer_cap_s=buffer_cap_s,
        startup_threshold_s=threshold_s,
        trace=trace,
        guidance=guide,
    )


def simulate(
    trace: Trace,
    ladder_bps: Sequence[int],
    policy: Policy[S],
    *,
    segment_duration_s: float = DEFAULT_SEGMENT_DURATION_S,
    content_duration_s: float = DEFAULT_CONTENT_DURATION_S,
    buffer_cap_s: float = DEFAULT_BUFFER_CAP_S,
    startup_threshold_s: float | None = None,
    guide: Guidance | None = None,
) -> SessionResult:
    """Play one session of ``policy`` over ``trace`` (see the module docstring)."""
    setup = make_setup(
        trace,
        ladder_bps,
        segment_duration_s=segment_duration_s,
        content_duration_s=content_duration_s,
        buffer_cap_s=buffer_cap_s,
        startup_threshold_s=startup_threshold_s,
        guide=guide,
    )
    return run_session(setup, policy)


def run_session(setup: SessionSetup, policy: Policy[S]) -> SessionResult:
    """Play one session whose parameters were checked by :func:`make_setup`."""
    link = link_for(setup.trace)
    segment_s = setup.segment_duration_s
    state = policy.start(setup)
    request_s = 0.0
    deadline_s = 0.0  # when playback would run dry; meaningful once playing
    playing = False
    startup_s = 0.0
    rebuffer_s = 0.0
    last_index: int | None = None
    history: list[Measurement] = []
    records: list[ChunkRecord] = []
    for n in range(setup.chunk_count):
        buffer_s = deadline_s - request_s if playing else n * segment_s
        inp = PolicyInput(
            chunk_index=n,
            buffer_s=buffer_s,
            playing=playing,
            last_index=last_index,
            history=tuple(history),
            now_s=request_s,
            setup=setup,
        )
        index, state = policy.choose(inp, state)
        if not 0 <= index < len(setup.ladder_bps):
            raise ValueError(f"{policy.name} chose rung {index} outside the ladder")
        bitrate = setup.ladder_bps[index]
        size = chunk_size_bytes(bitrate, segment_s)
        arrival_s = float(arrival_times_s(link, np.array([request_s]), size)[0])
        stall_s = 0.0
        if playing:
            stall_s = max(0.0, arrival_s - deadline_s)
            deadline_s = max(arrival_s, deadline_s) + segment_s
        elif n + 1 >= setup.start_chunks:
            playing = True
            startup_s = arrival_s
            deadline_s = arrival_s + (n + 1) * segment_s
        next_request_s = arrival_s
        if playing and n + 1 < setup.chunk_count:
            next_request_s = max(arrival_s, deadline_s - setup.buffer_cap_s)
        measurement = Measurement(size, arrival_s - request_s)
        records.append(
            ChunkRecord(
                index=n,
                rung=index,
                bitrate_bps=bitrate,
                size_bytes=size,
                request_s=request_s,
                download_s=measurement.download_s,
                throughput_bps=measurement.throughput_bps,
                buffer_before_s=buffer_s,
                stall_s=stall_s,
                wait_s=next_request_s - arrival_s,
            )
        )
        rebuffer_s += stall_s
        history.append(measurement)
        last_index = index
        request_s = next_request_s
    return SessionResult(
        trace_name=setup.trace.name,
        policy=policy.name,
        ladder_bps=setup.ladder_bps,
        segment_duration_s=segment_s,
        chunks=tuple(records),
        startup_s=startup_s,
        rebuffer_s=rebuffer_s,
        end_s=deadline_s,
    )


# ---------------------------------------------------------------------------
# QoE and session metrics.
# ---------------------------------------------------------------------------


def quality_mbps(bitrate_bps: float) -> float:
    """The linear utility of Pensieve's QoE_lin: the bitrate in Mb/s."""
    return bitrate_bps / 1e6


def perceptual_quality(bitrate_bps: float, r0_bps: float = PERCEPTUAL_R0_BPS) -> float:
    """A concave audio utility in [0, 1): ``1 − exp(−R / R0)``.

    Motivated by the audio quality model of ITU-T P.1203.2, whose predicted
    MOS for AAC rises steeply below about 96 kb/s and saturates by 128–192
    kb/s.  With R0 = 64 kb/s: 64 kb/s → 0.63, 128 → 0.86, 192 → 0.95, 256 →
    0.98, 320 → 0.99.  Rebuffering costs 1 per second (μ_p = 1).
    """
    return 1.0 - math.exp(-bitrate_bps / r0_bps)


def rebuffer_penalty_mbps(ladder_bps: Sequence[int]) -> float:
    """μ of QoE_lin: the top rung in Mb/s (Pensieve's choice)."""
    return quality_mbps(max(ladder_bps))


def _qoe(qualities: Sequence[float], penalty_s: float, mu: float) -> float:
    smoothness = sum(abs(b - a) for a, b in itertools.pairwise(qualities))
    return sum(qualities) - mu * penalty_s - smoothness


def qoe_lin(result: SessionResult) -> float:
    """Σ q(R_n) − μ·(startup + rebuffer) − Σ |q(R_{n+1}) − q(R_n)|, q in Mb/s, μ = q(R_max)."""
    qualities = [quality_mbps(chunk.bitrate_bps) for chunk in result.chunks]
    penalty_s = result.startup_s + result.rebuffer_s
    return _qoe(qualities, penalty_s, rebuffer_penalty_mbps(result.ladder_bps))


def qoe_perceptual(result: SessionResult) -> float:
    """QoE_lin's shape with :func:`perceptual_quality` per chunk and μ_p = 1."""
    qualities = [perceptual_quality(chunk.bitrate_bps) for chunk in result.chunks]
    return _qoe(qualities, result.startup_s + result.rebuffer_s, 1.0)


def average_bitrate_kbps(result: SessionResult) -> float:
    return sum(chunk.bitrate_bps for chunk in result.chunks) / len(result.chunks) / 1000.0


def rebuffer_ratio(result: SessionResult) -> float:
    """Stall time after startup over the media time played."""
    return result.rebuffer_s / result.playback_s


def switches_per_min(result: SessionResult) -> float:
    switches = sum(1 for a, b in itertools.pairwise(result.rungs) if a != b)
    return switches / (result.playback_s / 60.0)


# ---------------------------------------------------------------------------
# Small pure helpers the policies share (and tests check).
# ---------------------------------------------------------------------------


def capped_top(setup: SessionSetup, guided: bool) -> int:
    """The highest rung a client may pick: the guidance cap when guided."""
    if guided and setup.guidance is not None:
        return setup.guidance.max_index
    return len(setup.ladder_bps) - 1


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
    if buffer_s <= reservoir_s:
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


# ---------------------------------------------------------------------------
# Policies.
# ---------------------------------------------------------------------------


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
class OfflineState:
    plan: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OfflineOptimal:
    """The QoE_lin-optimal rung sequence for the whole trace, known in advance.

    See :func:`optimal_plan`: exact with respect to this simulator's model
    (no discretisation), so no policy can beat it on the same trace.
    """

    @property
    def name(self) -> str:
        return PolicyName.OFFLINE_OPTIMAL.value

    def start(self, setup: SessionSetup) -> OfflineState:
        return OfflineState(optimal_plan(setup))

    def choose(self, inp: PolicyInput, state: OfflineState) -> tuple[int, OfflineState]:
        return state.plan[inp.chunk_index], state


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


# ---------------------------------------------------------------------------
# The offline optimum: dynamic programming with exact Pareto pruning.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Populations, guidance and evaluation over trace sets.
# ---------------------------------------------------------------------------


def population_from_traces(
    traces: Sequence[Trace], key: str = "", window_s: float = POPULATION_WINDOW_S
) -> Population:
    """A population prior whose sessions' estimates are each trace's mean over ``window_s``."""
    if not traces:
        raise ValueError("a population needs at least one trace")
    means = np.array([trace.mean_bps(window_s) for trace in traces], dtype=np.float64)
    p10, p25, p50, p90 = (float(np.percentile(means, q)) for q in (10, 25, 50, 90))
    return Population(key, len(traces), p10, p25, p50, p90)


def leave_one_out_guidance(
    traces: Sequence[Trace],
    ladder_bps: Sequence[int],
    *,
    key: str = "",
    window_s: float = POPULATION_WINDOW_S,
    config: PolicyConfig = DEFAULT_POLICY,
) -> list[Guidance]:
    """The origin's session-start guidance for each trace, from the other traces' prior."""
    guidance: list[Guidance] = []
    for i in range(len(traces)):
        others = [trace for j, trace in enumerate(traces) if j != i]
        population = population_from_traces(others, key, window_s) if others else None
        guidance.append(decide(list(ladder_bps), None, population, 0.0, config))
    return guidance


def default_policies() -> list[Policy[Any]]:
    """Every policy, in reporting order."""
    return [
        HlsJs(),
        HlsJs(guided=True),
        DashJsDynamic(),
        DashJsDynamic(guided=True),
        Bba(),
        RobustMpc(),
        OfflineOptimal(),
    ]


@dataclass(frozen=True, slots=True)
class Summary:
    qoe: float
    qoe_perceptual: float
    bitrate_kbps: float
    rebuffer_ratio: float
    switches_per_min: float
    startup_s: float

    def to_dict(self) -> dict[str, float]:
        return {
            "qoe": self.qoe,
            "qoe_perceptual": self.qoe_perceptual,
            "bitrate_kbps": self.bitrate_kbps,
            "rebuffer_ratio": self.rebuffer_ratio,
            "switches_per_min": self.switches_per_min,
            "startup_s": self.startup_s,
        }


def summarize(results: Sequence[SessionResult]) -> Summary:
    """Means over sessions."""
    if not results:
        raise ValueError("nothing to summarise")

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values))

    return Summary(
        qoe=mean([qoe_lin(r) for r in results]),
        qoe_perceptual=mean([qoe_perceptual(r) for r in results]),
        bitrate_kbps=mean([average_bitrate_kbps(r) for r in results]),
        rebuffer_ratio=mean([rebuffer_ratio(r) for r in results]),
        switches_per_min=mean([switches_per_min(r) for r in results]),
        startup_s=mean([r.startup_s for r in results]),
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every session of every policy over a trace set."""

    traces: tuple[str, ...]
    sessions: Mapping[str, tuple[SessionResult, ...]] = field(default_factory=dict)

    def summaries(self) -> dict[str, Summary]:
        return {name: summarize(results) for name, results in self.sessions.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "traces": len(self.traces),
            "policies": {name: s.to_dict() for name, s in self.summaries().items()},
        }


def run_evaluation(
    traces: Sequence[Trace],
    ladder_bps: Sequence[int],
    policies: Sequence[Policy[Any]],
    *,
    key: str = "",
    segment_duration_s: float = DEFAULT_SEGMENT_DURATION_S,
    content_duration_s: float = DEFAULT_CONTENT_DURATION_S,
    buffer_cap_s: float = DEFAULT_BUFFER_CAP_S,
    startup_threshold_s: float | None = None,
    population_window_s: float = POPULATION_WINDOW_S,
    config: PolicyConfig = DEFAULT_POLICY,
) -> Evaluation:
    """Simulate every policy on every trace; guidance is leave-one-out per trace."""
    if not traces:
        raise ValueError("no traces")
    guidance = leave_one_out_guidance(
        traces, ladder_bps, key=key, window_s=population_window_s, config=config
    )
    sessions: dict[str, tuple[SessionResult, ...]] = {}
    for policy in policies:
        if policy.name in sessions:
            raise ValueError(f"two policies are called {policy.name}")
        sessions[policy.name] = tuple(
            simulate(
                trace,
                ladder_bps,
                policy,
                segment_duration_s=segment_duration_s,
                content_duration_s=content_duration_s,
                buffer_cap_s=buffer_cap_s,
                startup_threshold_s=startup_threshold_s,
                guide=guide,
            )
            for trace, guide in zip(traces, guidance, strict=True)
        )
    return Evaluation(tuple(trace.name for trace in traces), sessions)


def evaluate(
    traces: Sequence[Trace],
    ladder_bps: Sequence[int] = DEFAULT_AUDIO_LADDER_BPS,
    policies: Sequence[Policy[Any]] | None = None,
    *,
    key: str = "",
    segment_duration_s: float = DEFAULT_SEGMENT_DURATION_S,
    content_duration_s: float = DEFAULT_CONTENT_DURATION_S,
    buffer_cap_s: float = DEFAULT_BUFFER_CAP_S,
    startup_threshold_s: float | None = None,
    population_window_s: float = POPULATION_WINDOW_S,
    config: PolicyConfig = DEFAULT_POLICY,
) -> dict[str, object]:
    """``{"traces": N, "policies": {name: {"qoe": mean, ...}}}`` over ``traces``."""
    return run_evaluation(
        traces,
        ladder_bps,
        default_policies() if policies is None else policies,
        key=key,
        segment_duration_s=segment_duration_s,
        content_duration_s=content_duration_s,
        buffer_cap_s=buffer_cap_s,
        startup_threshold_s=startup_threshold_s,
        population_window_s=population_window_s,
        config=config,
    ).to_dict()
