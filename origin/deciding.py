"""One segment of origin-decided playback (``?abr=origin``) decided for its
session: the request's CMCD folded into the session, the controller's inputs
gathered (:class:`~cadenza.abr.controller_inputs.Signals`), the rung chosen by
:func:`cadenza.abr.controller.decide_rung`, and the decision stored with the
controller's state, all in one read-change-write of the session.

The inputs: the CMCD keys ``bl``, ``mtp``, ``br``, ``d``, ``su``, ``bs``,
``rtp`` (CTA-5004, query or headers), the ``Save-Data`` and ``ECT`` client
hints, a ``max_bitrate`` query argument (kb/s, as the rendition filters read
it), the segments left in the track (so the plan never looks past its end),
the origin's clock (the app's :data:`~cadenza.origin.keys.CLOCK`), the TCP
delivery rate of the previous response when the origin served its bytes
on this same connection (:mod:`cadenza.origin.tcp_info`), and the population
prior of the session's network.  A malformed CMCD value is dropped (counted),
never an error.

The decision also says how the segment is answered
(:class:`~cadenza.abr.delivery.Delivery`): per ``abr_delivery``, always a redirect,
always the bytes, or (``adaptive``) per request by
:func:`cadenza.abr.delivery.deliver_decision`."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from cadenza.abr.cmcd import Cmcd, parse_request_cmcd
from cadenza.abr.controller import DEFAULT_CONTROLLER, Decision, decide_rung
from cadenza.abr.controller_inputs import parse_ect, parse_save_data, signals_from_cmcd
from cadenza.abr.controller_table import decision_table, end_plan
from cadenza.abr.delivery import Delivery, deliver_decision
from cadenza.abr.frozen import fast_init
from cadenza.abr.population import network_key_for
from cadenza.abr.session import SessionState, apply_cmcd, valid_sid
from cadenza.abr.session_origin import decision_fields
from cadenza.manifests.filters import InvalidFilterError, parse_filter_query
from cadenza.manifests.groups import SwitchGroup, nominal_bitrate_bps
from cadenza.manifests.model import Presentation, Rendition, Segment
from cadenza.origin.core.group_segments import GroupSegment
from cadenza.origin.errors import BadRequestError
from cadenza.origin.keys import CLOCK, METRICS, POPULATION
from cadenza.origin.rendering import nominal_segment_s
from cadenza.origin.settings import AbrDelivery
from cadenza.origin.tcp_info import Connection
from cadenza.origin.telemetry import ingest

log = logging.getLogger("cadenza.origin.deciding")

# Bytes of randomness in a session id the origin assigns (URL-safe base64: 22 characters).
ASSIGNED_SID_BYTES = 16


def assign_sid() -> str:
    """A new session id, unguessable (``secrets``), and a :func:`valid_sid`."""
    sid = secrets.token_urlsafe(ASSIGNED_SID_BYTES)
    assert valid_sid(sid)
    return sid


def session_of(query: Mapping[str, str], cmcd: Cmcd) -> str | None:
    """The session a request names: CMCD ``sid`` first, else the ``sid`` argument;
    None for none or an invalid one."""
    sid = cmcd.string("sid") or query.get("sid")
    return sid if sid is not None and valid_sid(sid) else None


def max_bitrate_bps(query: Mapping[str, str]) -> int | None:
    """The ``max_bitrate`` argument (kb/s, as the rendition filters read it), in bit/s.
    Raises :class:`BadRequestError` for one that is not a whole number."""
    if "max_bitrate" not in query:
        return None
    try:
        return parse_filter_query({"max_bitrate": query["max_bitrate"]}).max_bitrate_bps
    except InvalidFilterError as exc:
        raise BadRequestError(str(exc)) from exc


@fast_init
@dataclass(frozen=True, slots=True)
class Decided:
    """What was decided for one group segment."""

    sid: str
    rung: str  # the rendition id chosen
    decision: Decision
    switched: bool
    delivery: Delivery


def segment_numbered(rendition: Rendition, number: int) -> Segment | None:
    """The rendition's segment ``number`` (numbers run on from the first: an index
    computation, as a long track has thousands)."""
    segments = rendition.segments
    index = number - segments[0].number if segments else -1
    if 0 <= index < len(segments) and segments[index].number == number:
        return segments[index]
    return next((s for s in segments if s.number == number), None)


def group_ladder_bps(presentation: Presentation, group: SwitchGroup) -> tuple[int, ...]:
    """The group's rungs' bitrates, ascending (the group lists them so)."""
    return tuple(nominal_bitrate_bps(presentation.rendition(i)) for i in group.rendition_ids)


def segments_left(presentation: Presentation, group: SwitchGroup, segment: Segment) -> int | None:
    """How many segments of the group's track are left from ``segment`` (it included),
    by the top rung's segment numbers; None when the rung has none."""
    segments = presentation.rendition(group.rendition_ids[-1]).segments
    return segments[-1].number - segment.number + 1 if segments else None


def rung_segment_bytes(presentation: Presentation, rung: str, segment: Segment) -> int:
    """The size of rung ``rung``'s segment of ``segment``'s number (``segment``'s own
    when the rung has none of that number)."""
    chosen = segment_numbered(presentation.rendition(rung), segment.number)
    return segment.size_bytes if chosen is None else chosen.size_bytes


def build_tables(ladder_bps: tuple[int, ...], segment_duration_s: float) -> None:
    """The controller's decision tables for one ladder: the full plan's and those of
    the plans shortened to the track's last segments."""
    plan = DEFAULT_CONTROLLER.plan
    for remaining in range(plan.horizon, 0, -1):
        decision_table(ladder_bps, segment_duration_s, end_plan(plan, remaining))


async def prepare_decisions(presentation: Presentation) -> None:
    """Build the controller's decision tables for each switchable group of a track off the
    event loop (:func:`build_tables`), when its ``?abr=origin`` manifest is asked for, so
    that its decided segments find them in the cache
    (:func:`cadenza.abr.controller_table.decision_table` is cached by its arguments; a
    6-rung table takes over a second to build, which on the loop would stall every other
    connection)."""
    duration_s = nominal_segment_s(presentation)
    for group in presentation.switchable_groups():
        ladder = group_ladder_bps(presentation, group)
        await asyncio.to_thread(build_tables, ladder, duration_s)


async def decide_segment(
    app: web.Application,
    *,
    track: str,
    found: GroupSegment,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    remote: str | None,
    connection: Connection | None,
    mode: AbrDelivery,
    object_name: str | None = None,
) -> Decided:
    """Decide the rung of the group segment ``found`` for the request's session (a
    new one for a request that names none, or an unknown one), and how it is
    answered (per ``mode``), and store the decision.  A segment served directly
    is served on ``connection`` (its delivery rate is read at the session's next
    request on it).  ``object_name``: the requested file's name (a stall's
    sign for players that send no ``bs``: cadenza.abr.session).  Raises
    :class:`BadRequestError` for a ``max_bitrate`` that is not a number; a
    session store that fails decides without the session's past."""
    metrics = app[METRICS]
    if connection is not None and not connection.measures(remote):
        connection = None  # a forwarded request: the socket measures the proxy's hop
    cmcd = parse_request_cmcd(query.get("CMCD"), headers)
    if cmcd.malformed:
        metrics.cmcd_malformed.inc(len(cmcd.malformed))
    cap_bps = max_bitrate_bps(query)
    sid = session_of(query, cmcd) or assign_sid()
    network_key = network_key_for(remote, headers)
    population = await app[POPULATION].prior(network_key) if network_key else None
    ladder = found.ladder_bps
    # One value per track, so the controller's decision table is built once.
    duration_s = found.segment_duration_s
    rendition_ids = found.group.rendition_ids
    number = found.segment.number
    remaining = segments_left(found.presentation, found.group, found.segment)
    save_data = parse_save_data(headers.get("Save-Data"))
    ect = parse_ect(headers.get("ECT"))
    now_s = app[CLOCK]()
    outcome: list[Decided] = []

    def decide(state: SessionState) -> dict[str, object]:
        # The session before the request's CMCD: a decision reads none of what it changes.
        delivery_bps = None
        if connection is not None and state.direct_peer == connection.peer:
            delivery_bps = connection.delivery_rate_bps()
        signals = signals_from_cmcd(
            cmcd,
            delivery_rate_bps=delivery_bps,
            save_data=save_data,
            max_bitrate_bps=cap_bps,
            ect=ect,
            remaining_segments=remaining,
        )
        decision, controller = decide_rung(
            ladder,
            state.controller,
            signals,
            now_s,
            segment_duration_s=duration_s,
            population=population,
        )
        rung = rendition_ids[decision.index]
        object_bytes = found.sizes_bytes[rung]
        if mode is AbrDelivery.REDIRECT:
            delivery = Delivery.REDIRECT
        elif mode is AbrDelivery.DIRECT:
            delivery = Delivery.DIRECT
        else:
            delivery = deliver_decision(decision, signals, ladder[-1], object_bytes)
        previous = state.decisions[-1].rung if state.decisions else None
        switched = previous is not None and previous != rung
        outcome.append(Decided(sid, rung, decision, switched, delivery))
        direct = delivery is Delivery.DIRECT
        return decision_fields(
            state,
            decision,
            controller,
            segment=number,
            rung=rung,
            now_s=now_s,
            object_bytes=object_bytes,
            segment_duration_s=duration_s,
            delivery_rate_bps=delivery_bps,
            direct_peer=connection.peer if direct and connection is not None else None,
            delivery=delivery,
            measured_kbps=signals.measured_kbps,
            buffer_ms=signals.buffer_ms,
        )

    try:
        await ingest(
            app,
            sid,
            cmcd,
            now_s,
            is_request=True,
            track=track,
            network_key=network_key,
            also=decide,
            object_name=object_name,
        )
    except Exception:  # a session store must never fail a media request
        log.exception("session update failed for %s; decided without its past", sid[:64])
        outcome.clear()
        apply_cmcd(
            None,
            cmcd,
            now_s,
            sid=sid,
            is_request=True,
            track=track,
            network_key=network_key,
            also=decide,
        )
    decided = outcome[-1]
    # StrEnums: their values.
    metrics.decided(decided.decision.reason, decided.switched)
    return decided
