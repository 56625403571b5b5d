"""How an origin-decided segment (``?abr=origin``) reaches the player: a redirect to
the chosen rung's own URL, or the bytes served by the origin.

A ``302`` (RFC 9110, 15.4.3) keeps the bytes cacheable at the edge but costs the
player one more round trip before the real request goes out.  That round trip
is noise while a segment takes seconds to download at a comfortable rate, and it
turns into stall when the link is slow and the buffer short.  Serving the bytes
directly saves the round trip and costs origin egress of the segment's size
(the CDN offload lost).

:func:`choose_delivery` is the per-request rule of ``abr_delivery = adaptive``:
a pure function of the decision's estimate of the link now (``Decision.link_bps``,
robust and before the reversion toward the session's level that the plan assumes
over its horizon: the round trip is paid on this fetch), the chosen segment's
size, the buffer the origin believes the player has, whether playback has
started, the top rung of the ladder and (when known) the round-trip time.  The
origin serves directly when any of these holds:

- playback has not started (``startup``): a redirect's round trip adds to the
  start-up delay, and a session starts with a few segments;
- the estimate is below ``headroom`` times the ladder's top rung: the link, not
  the ladder, limits the session, so every round trip is throughput lost and
  may become a stall;
- playback is running and the buffer is below ``low_buffer_s`` (a round trip
  now may be a stall);
- the round trip is known and is more than ``rtt_share`` of the whole fetch,
  ``rtt / (rtt + segment_bytes * 8 / throughput)``.

Otherwise it redirects.  The thresholds were chosen by measurement in the
simulator (``docs/abr-results.md``, policy ``origin-adaptive``): with
``headroom`` 1.25 and ``startup`` on, the adaptive origin scores what serving
every segment scores on every bundled set, and redirects most segments where
the link has room above the ladder; ``low_buffer_s`` and ``rtt_share`` added
nothing there (the bundled sets' round trips are a few per cent of a segment's
fetch) and are off, or unused without an RTT, by default."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from cadenza.abr.controller import Decision, Reason
from cadenza.abr.controller_inputs import Signals


class Delivery(enum.StrEnum):
    """How one decided segment was answered."""

    REDIRECT = "redirect"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class DeliveryRule:
    """The thresholds of :func:`choose_delivery`."""

    # Serve below this multiple of the ladder's top rung.
    headroom: float = 1.25
    # Serve while playing with less buffer than this (0: never for the buffer alone).
    low_buffer_s: float = 0.0
    # Serve every segment before playback starts.
    startup: bool = True
    # Serve when the round trip is more than this share of the fetch.
    rtt_share: float = 0.2


DEFAULT_DELIVERY_RULE: Final = DeliveryRule()


def choose_delivery(
    throughput_bps: float,
    top_bps: int,
    segment_bytes: int,
    buffer_s: float,
    playing: bool,
    rtt_s: float | None = None,
    rule: DeliveryRule = DEFAULT_DELIVERY_RULE,
) -> Delivery:
    """Redirect or serve the chosen segment (see the module docstring).

    ``throughput_bps`` is the estimate the decision assumed (0 or less: unknown,
    treated as slow); ``top_bps`` the highest rung of the ladder; ``buffer_s``
    the buffer believed at the request; ``playing`` False before playback
    starts; ``rtt_s`` the connection's round-trip time, None when unknown."""
    if not playing and rule.startup:
        return Delivery.DIRECT
    if throughput_bps <= 0 or throughput_bps < rule.headroom * top_bps:
        return Delivery.DIRECT
    if playing and buffer_s < rule.low_buffer_s:
        return Delivery.DIRECT
    if rtt_s is not None and rtt_s > 0:
        transfer_s = segment_bytes * 8.0 / throughput_bps
        if rtt_s > rule.rtt_share * (rtt_s + transfer_s):
            return Delivery.DIRECT
    return Delivery.REDIRECT


# The reasons of a decision made before any throughput sample: the session's start.
_STARTING: Final = frozenset({Reason.START_DEFAULT, Reason.START_PRIOR, Reason.START_ECT})


def deliver_decision(
    decision: Decision,
    signals: Signals,
    top_bps: int,
    segment_bytes: int,
    rtt_s: float | None = None,
    rule: DeliveryRule = DEFAULT_DELIVERY_RULE,
) -> Delivery:
    """:func:`choose_delivery` for a :func:`cadenza.abr.controller.decide_rung` decision:
    its estimate of the link now and believed buffer; playback not started while the
    request says so (CMCD ``su``, CTA-5004) or the decision is a start decision
    (a player that sends no CMCD)."""
    playing = not signals.startup and decision.reason not in _STARTING
    return choose_delivery(
        decision.link_bps, top_bps, segment_bytes, decision.buffer_s, playing, rtt_s, rule
    )
