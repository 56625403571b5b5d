"""One simulated session: what a policy sees, the policy protocol, and the loop.

Model (one session, see :mod:`cadenza.abr.sim.link` for the downloads):

* The content is ``ceil(content_duration_s / segment_duration_s)`` chunks,
  requested one after another.
* Playback starts when ``startup_threshold_s`` of media has arrived (one chunk
  by default); that moment is the startup delay.  After it, a chunk that
  arrives after the buffer ran dry stalls playback for the difference.
* After a chunk arrives the buffer may exceed the client's buffer target; the
  client then waits, playing, until it is back at the target before the next
  request.  The target is ``buffer_cap_s`` unless the policy is
  :class:`Paced` (the player models: each has its own target).
* A policy that is :class:`Abandoning` sees each download in flight
  (:class:`Flight`) and may abort it and fetch the same chunk at another rung;
  the time spent on the aborted attempt is lost, and the attempt goes into
  the history as a partial :class:`Measurement`.

Policies are frozen dataclasses with the state passed in and returned
explicitly (:class:`Policy`); the simulator owns nothing else.  Every number
here is deterministic: no randomness, no clocks.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, runtime_checkable

import numpy as np

from cadenza.abr.policy import Guidance
from cadenza.abr.sim.link import (
    FloatArray,
    Link,
    arrival_times_s,
    bytes_loaded,
    chunk_size_bytes,
    link_for,
)
from cadenza.abr.traces import Trace

DEFAULT_SEGMENT_DURATION_S: Final = 4.0
DEFAULT_CONTENT_DURATION_S: Final = 180.0
DEFAULT_BUFFER_CAP_S: Final = 30.0


class PolicyName(enum.StrEnum):
    HLSJS = "hlsjs"
    DASHJS_DYNAMIC = "dashjs-dynamic"
    BBA = "bba"
    ROBUST_MPC = "robust-mpc"
    OFFLINE_OPTIMAL = "offline-optimal"
    HLSJS_CADENZA = "hlsjs+cadenza"
    DASHJS_CADENZA = "dashjs+cadenza"
    SHAKA = "shaka"
    ORIGIN = "origin"
    ORIGIN_SERVED = "origin-served"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One chunk download as the client saw it.

    ``download_s`` runs from the request to the last byte and includes the
    round trip; ``ttfb_s`` is the part before the first byte (the RTT).  An
    ``abandoned`` download was aborted after ``size_bytes`` had arrived.
    """

    size_bytes: int
    download_s: float
    ttfb_s: float = 0.0
    abandoned: bool = False

    @property
    def throughput_bps(self) -> float:
        """Size over the whole download time, first byte included."""
        return 8.0 * self.size_bytes / self.download_s

    @property
    def transfer_s(self) -> float:
        """First byte to last byte: what a player that excludes the TTFB times."""
        return max(self.download_s - self.ttfb_s, 0.0)


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


S = TypeVar("S")


class Policy(Protocol[S]):
    """A rate-adaptation policy; pure: the state goes in and comes back out."""

    @property
    def name(self) -> str: ...

    def start(self, setup: SessionSetup) -> S: ...

    def choose(self, inp: PolicyInput, state: S) -> tuple[int, S]: ...


@dataclass(frozen=True, slots=True)
class Flight:
    """A chunk download in progress, as an :class:`Abandoning` policy may watch it.

    ``deadline_s`` is when playback runs dry if nothing else arrives (None
    before playback starts); ``arrival_s`` is when the download would end.
    """

    chunk_index: int
    rung: int
    size_bytes: int
    request_s: float
    arrival_s: float
    ttfb_s: float
    deadline_s: float | None
    link: Link
    setup: SessionSetup

    def loaded_bytes(self, at_s: FloatArray) -> FloatArray:
        """Bytes that have arrived by each ``at_s``."""
        return bytes_loaded(self.link, self.request_s, at_s, self.size_bytes)


@runtime_checkable
class Paced(Protocol):
    """A policy with its own buffer target (players do; the literature's use ``buffer_cap_s``)."""

    def request_below_s(self, setup: SessionSetup, rung: int) -> float:
        """Request the next chunk once the buffer is at most this (after a chunk of ``rung``)."""
        ...


@runtime_checkable
class Abandoning(Protocol[S]):
    """A policy that may abort a download in flight."""

    def abandon(self, flight: Flight, state: S) -> tuple[float | None, int, S]:
        """When to abort ``flight`` (None: never), the rung to fetch instead, the new state."""
        ...


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
    # Time spent on aborted attempts at this chunk before the download that counted.
    abandoned_s: float = 0.0


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
        first_request_s = request_s
        while True:
            size = chunk_size_bytes(setup.ladder_bps[index], segment_s)
            arrival_s = float(arrival_times_s(link, np.array([request_s]), size)[0])
            if not isinstance(policy, Abandoning):
                break
            flight = Flight(
                n,
                index,
                size,
                request_s,
                arrival_s,
                link.rtt_s,
                deadline_s if playing else None,
                link,
                setup,
            )
            abort_s, replacement, state = policy.abandon(flight, state)
            if abort_s is None or not request_s < abort_s < arrival_s:
                break
            if not 0 <= replacement < len(setup.ladder_bps):
                raise ValueError(f"{policy.name} chose rung {replacement} outside the ladder")
            loaded = float(flight.loaded_bytes(np.array([abort_s]))[0])
            history.append(Measurement(round(loaded), abort_s - request_s, link.rtt_s, True))
            index, request_s = replacement, abort_s
        bitrate = setup.ladder_bps[index]
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
            below_s = (
                policy.request_below_s(setup, index)
                if isinstance(policy, Paced)
                else setup.buffer_cap_s
            )
            next_request_s = max(arrival_s, deadline_s - below_s)
        measurement = Measurement(size, arrival_s - request_s, link.rtt_s)
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
                abandoned_s=request_s - first_request_s,
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
