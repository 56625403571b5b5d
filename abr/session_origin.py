"""What the origin's own handling of a session's media requests adds to it.

:func:`note_media_request` (a segment the origin serves) and
:func:`decision_fields` (an origin-decided segment: the fields to change, for
:func:`cadenza.abr.session.apply_cmcd`'s ``also`` or :func:`cadenza.abr.session.evolve`)
fold in the origin's own measurement of the player's link, the throughput it
reports as CMSD ``etp`` (CTA-5006), and its decisions.  Pure, like
:mod:`cadenza.abr.session`.
"""

from __future__ import annotations

from typing import Final

from cadenza.abr.controller import ControllerState, Decision
from cadenza.abr.controller_samples import (
    DEFAULT_SAMPLE_RULES,
    believed_delivery_bps,
    waiting,
)
from cadenza.abr.delivery import Delivery as DeliveryMode
from cadenza.abr.session import DECISIONS_KEPT, DecisionRecord, SessionState, evolve

# The weight of a new sample in the origin's own throughput estimate.
ORIGIN_SAMPLE_WEIGHT: Final = 0.5


def _origin_rate_bps(
    state: SessionState,
    now_s: float,
    segment_duration_s: float,
    delivery_rate_bps: float | None,
    measured_kbps: int | None,
    buffer_ms: int | None,
) -> float | None:
    arrival_bps: float | None = None
    gap_s = None if state.last_media_s is None else now_s - state.last_media_s
    if gap_s is not None and gap_s > 0 and state.last_media_bytes > 0:
        arrival_bps = 8.0 * state.last_media_bytes / gap_s
    sample: float | None = None
    if delivery_rate_bps is not None:
        awaited_bps = arrival_bps if waiting(buffer_ms, segment_duration_s) else None
        sample = believed_delivery_bps(delivery_rate_bps, measured_kbps, awaited_bps)
    paced_s = DEFAULT_SAMPLE_RULES.paced_gap_fraction * segment_duration_s
    if sample is None and gap_s is not None and arrival_bps is not None and gap_s < paced_s:
        sample = arrival_bps
    rate = state.origin_rate_bps
    if sample is None:
        return rate
    return sample if rate is None else rate + ORIGIN_SAMPLE_WEIGHT * (sample - rate)


def note_media_request(
    state: SessionState,
    now_s: float,
    *,
    object_bytes: int,
    segment_duration_s: float,
    delivery_rate_bps: float | None = None,
    direct_peer: str | None = None,
    measured_kbps: int | None = None,
    buffer_ms: int | None = None,
) -> SessionState:
    """Fold the origin's own timing of one media request into the session: the
    TCP delivery rate of the previous response when it was measured and can be
    the player's link (:func:`cadenza.abr.controller_samples.believed_delivery_bps`,
    the check the controller's samples pass too: ``measured_kbps`` and ``buffer_ms``
    are the request's CMCD ``mtp`` and ``bl``), else the previous object's size over
    the time since its request (a player asks for the next object once the last one
    arrived: a lower bound on the throughput), unless the gap is the pacing of a full
    buffer.  This is the throughput the origin reports as CMSD ``etp`` (CTA-5006),
    never the player's own ``mtp`` echoed back: the player's word only vetoes a rate
    no link of its could have carried.  ``direct_peer``: the connection this object's
    bytes go out on, when the origin serves them."""
    return evolve(
        state,
        origin_rate_bps=_origin_rate_bps(
            state, now_s, segment_duration_s, delivery_rate_bps, measured_kbps, buffer_ms
        ),
        last_media_s=now_s,
        last_media_bytes=object_bytes,
        direct_peer=direct_peer,
    )


def decision_fields(
    state: SessionState,
    decision: Decision,
    controller: ControllerState,
    *,
    segment: int,
    rung: str,
    now_s: float,
    object_bytes: int,
    segment_duration_s: float,
    delivery_rate_bps: float | None,
    direct_peer: str | None,
    delivery: DeliveryMode | None = None,
    measured_kbps: int | None = None,
    buffer_ms: int | None = None,
) -> dict[str, object]:
    """The fields an origin-decided segment changes in its session (for
    :func:`cadenza.abr.session.apply_cmcd`'s ``also``, or ``evolve``): the decision
    recorded (the latest :data:`~cadenza.abr.session.DECISIONS_KEPT` are kept, each with
    ``delivery``, how the segment is answered), the controller's state, and the timing
    as :func:`note_media_request` folds it."""
    record = DecisionRecord(segment, rung, decision.bitrate_bps, decision.reason, delivery)
    decisions = state.decisions
    return {
        "controller": controller,
        "decisions": (*decisions, record)[-DECISIONS_KEPT:]
        if len(decisions) >= DECISIONS_KEPT
        else (*decisions, record),
        "origin_rate_bps": _origin_rate_bps(
            state, now_s, segment_duration_s, delivery_rate_bps, measured_kbps, buffer_ms
        ),
        "last_media_s": now_s,
        "last_media_bytes": object_bytes,
        "direct_peer": direct_peer,
    }
