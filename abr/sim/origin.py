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
(:func:`session_trace`).  Adaptive (``origin-adaptive``) it chooses per
segment with :func:`cadenza.abr.delivery.choose_delivery`: a served segment
costs one RTT, a redirected one two (the redirect's round trip is charged
before the real request goes out, see :meth:`OriginAdaptive.abandon`), and the
delivery rate is known after served segments only.  Nothing here reads the
trace's throughput.
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
from cadenza.abr.delivery import DEFAULT_DELIVERY_RULE, Delivery, DeliveryRule, deliver_decision
from cadenza.abr.policy import Population
from cadenza.abr.sim.link import chunk_size_bytes
from cadenza.abr.sim.session import Flight, Measurement, PolicyInput, PolicyName, SessionSetup
from cadenza.abr.traces import Trace


@dataclass(frozen=True, slots=True)
class OriginPlayerState:
    controller: ControllerState | None = None
    # The buffer when the previous object was requested, to tell a stall.
    previous_buffer_s: float = 0.0
    previous_playing: bool = False
    # Adaptive delivery: the current request is redirected and its round trip not
    # yet paid; the previous object was redirected.
    redirect_due: bool = False
    previous_redirected: bool = False


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
        last = inp.history[-1] if inp.history else None
        return self.signals_after(inp, state, last, served=not self.redirect)

    def signals_after(
        self,
        inp: PolicyInput,
        state: OriginPlayerState,
        last: Measurement | None,
        *,
        served: bool,
    ) -> Signals:
        """:meth:`signals` given the previous object's download as the player saw it,
        and whether the origin served it (then it knows its delivery rate)."""
        delivery: float | None = None
        if last is not None and served:
            # Round trips before the first byte (the origin's TCP RTT) are not delivery.
            transfer_s = max(last.download_s - inp.setup.trace.rtt_s, 1e-3)
            delivery = 8.0 * last.size_bytes / transfer_s
        remaining = inp.setup.chunk_count - inp.chunk_index
        if not self.cmcd:
            return Signals(delivery_rate_bps=delivery, remaining_segments=remaining)
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
            remaining_segments=remaining,
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


@dataclass(frozen=True, slots=True)
class OriginAdaptive(OriginDecided):
    """The ``origin`` player with ``abr_delivery = adaptive``: per segment, the origin
    redirects or serves as :func:`cadenza.abr.delivery.choose_delivery` says, from
    the decision's throughput estimate and believed buffer (and the trace's RTT,
    which the origin knows from its TCP connection, when ``use_rtt``)."""

    redirect: bool = False
    rule: DeliveryRule = DEFAULT_DELIVERY_RULE
    use_rtt: bool = False

    @property
    def name(self) -> str:
        return ORIGIN_ADAPTIVE

    def signals(self, inp: PolicyInput, state: OriginPlayerState) -> Signals:
        # The redirect's round trip is charged as an aborted zero-byte attempt:
        # the player's own sample of a redirected object spans both round trips.
        real = [m for m in inp.history if not m.abandoned]
        last = real[-1] if real else None
        if last is not None and state.previous_redirected:
            rtt_s = inp.setup.trace.rtt_s
            last = Measurement(last.size_bytes, last.download_s + rtt_s, last.ttfb_s + rtt_s)
        return self.signals_after(inp, state, last, served=not state.previous_redirected)

    def choose(self, inp: PolicyInput, state: OriginPlayerState) -> tuple[int, OriginPlayerState]:
        signals = self.signals(inp, state)
        decision, controller = decide_rung(
            inp.ladder_bps,
            state.controller,
            signals,
            inp.now_s,
            segment_duration_s=inp.segment_duration_s,
            population=self.population,
            config=self.config,
        )
        delivery = deliver_decision(
            decision,
            signals,
            inp.ladder_bps[-1],
            chunk_size_bytes(inp.ladder_bps[decision.index], inp.segment_duration_s),
            inp.setup.trace.rtt_s if self.use_rtt else None,
            self.rule,
        )
        redirected = delivery is Delivery.REDIRECT
        return decision.index, OriginPlayerState(
            controller,
            inp.buffer_s,
            inp.playing,
            redirect_due=redirected,
            previous_redirected=redirected,
        )

    def abandon(
        self, flight: Flight, state: OriginPlayerState
    ) -> tuple[float | None, int, OriginPlayerState]:
        """A redirected request: the 302 arrives after one round trip, then the real
        request goes out (for the same rung)."""
        if not state.redirect_due:
            return None, flight.rung, state
        return flight.request_s + flight.ttfb_s, flight.rung, replace(state, redirect_due=False)

    def session_trace(self, trace: Trace) -> Trace:
        """The trace as is: redirects are charged per segment (:meth:`abandon`)."""
        return trace


ORIGIN_ADAPTIVE = "origin-adaptive"
