"""The ``origin`` policy: a player with no ABR of its own that fetches what the
origin decides (``?abr=origin``).

At each request the origin runs :func:`cadenza.abr.controller.decide_rung`, the
function the HTTP edge runs, on exactly what it would know at that moment: the
CMCD (CTA-5004) a player sends with the request, about the previous object
(``mtp``, here that object's size over its download time, rounded to 100 kb/s
as the spec requires; ``br``; ``d``) and its buffer now (``bl`` rounded to
100 ms, ``su`` before playback starts, ``bs`` after a stall), and its own
timing (the request time).  Served (``origin-served``) it also knows
the previous response's delivery rate, the bytes over the time they took after
the first round trip; redirected (``origin``) it answers each segment request
with a 302 to the chosen rung's URL, which costs the player one more round
trip per segment: the session is simulated over the trace with twice its RTT
(:func:`session_trace`).  Nothing here reads the trace's throughput.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cadenza.abr.controller import (
    DEFAULT_CONTROLLER,
    ControllerConfig,
    ControllerState,
    decide_rung,
)
from cadenza.abr.controller_inputs import MTP_STEP_KBPS, Signals
from cadenza.abr.policy import Population
from cadenza.abr.sim.session import PolicyInput, PolicyName, SessionSetup
from cadenza.abr.traces import Trace


@dataclass(frozen=True, slots=True)
class OriginPlayerState:
    controller: ControllerState | None = None
    # The buffer when the previous object was requested, to tell a stall.
    previous_buffer_s: float = 0.0
    previous_playing: bool = False


def round_to(value: float, step: int) -> int:
    """CMCD rounding: to the nearest ``step`` (half up)."""
    return int((value + step / 2) // step * step)


@dataclass(frozen=True, slots=True)
class OriginDecided:
    """A player that fetches the rung the origin chooses (see the module docstring).

    ``population`` is the prior the origin holds for the session's network at
    its start; ``cmcd`` False models a player that sends no CMCD (the origin
    then has only its own timing, and its delivery rate when it serves).
    """

    redirect: bool = True
    cmcd: bool = True
    population: Population | None = None
    config: ControllerConfig = DEFAULT_CONTROLLER

    @property
    def name(self) -> str:
        return (PolicyName.ORIGIN if self.redirect else PolicyName.ORIGIN_SERVED).value

    def start(self, setup: SessionSetup) -> OriginPlayerState:
        return OriginPlayerState()

    def signals(self, inp: PolicyInput, state: OriginPlayerState) -> Signals:
        """What the request carries and what the origin measured, before the decision."""
        delivery: float | None = None
        last = inp.history[-1] if inp.history else None
        if last is not None and not self.redirect:
            # Round trips before the first byte (the origin's TCP RTT) are not delivery.
            transfer_s = max(last.download_s - inp.setup.trace.rtt_s, 1e-3)
            delivery = 8.0 * last.size_bytes / transfer_s
        if not self.cmcd:
            return Signals(delivery_rate_bps=delivery)
        stalled = (
            last is not None
            and state.previous_playing
            and last.download_s > state.previous_buffer_s
        )
        previous_bps = inp.ladder_bps[inp.last_index] if inp.last_index is not None else None
        return Signals(
            buffer_ms=round_to(inp.buffer_s * 1000.0 if inp.playing else 0.0, 100),
            measured_kbps=None
            if last is None
            else round_to(last.throughput_bps / 1000.0, MTP_STEP_KBPS),
            encoded_kbps=None if previous_bps is None else round(previous_bps / 1000),
            object_ms=None if last is None else round(inp.segment_duration_s * 1000),
            startup=not inp.playing,
            starved=stalled,
            delivery_rate_bps=delivery,
        )

    def choose(self, inp: PolicyInput, state: OriginPlayerState) -> tuple[int, OriginPlayerState]:
        decision, controller = decide_rung(
            inp.ladder_bps,
            state.controller,
            self.signals(inp, state),
            inp.now_s,
            segment_duration_s=inp.segment_duration_s,
            population=self.population,
            config=self.config,
        )
        return decision.index, OriginPlayerState(controller, inp.buffer_s, inp.playing)

    def session_trace(self, trace: Trace) -> Trace:
        """The trace this player sees: with a redirect per segment, twice the RTT."""
        return session_trace(trace, 1 if self.redirect else 0)


def session_trace(trace: Trace, redirects: int) -> Trace:
    """``trace`` as a client that follows ``redirects`` redirects per request sees it.

    The link model spends one RTT before the first byte; each redirect adds
    one more round trip before the real request goes out.
    """
    if redirects == 0:
        return trace
    return replace(trace, rtt_s=trace.rtt_s * (1 + redirects))
