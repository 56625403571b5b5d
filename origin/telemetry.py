"""CMCD in, guidance out: what the request path asks of sessions.

Every manifest and segment request is read for CMCD (query argument and
headers) and folded into its session (:func:`observe_request`, :func:`observe`,
:func:`ingest`), and a session's guidance is decided here (:func:`guidance_for`).
The HTTP API over sessions is elsewhere: ``POST /v1/beacons`` in
:mod:`cadenza.origin.beacons`, ``GET /v1/sessions[/{sid}]`` and the ladder
recommendation in :mod:`cadenza.origin.session_api`.  Nothing here can fail a
media request: a broken payload is counted and dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from cadenza.abr.cmcd import HEADER_NAMES, Cmcd, parse_request_cmcd
from cadenza.abr.guidance import ladder_bps
from cadenza.abr.policy import Guidance, decide
from cadenza.abr.population import network_key_for
from cadenza.abr.session import Changes, Delivery, SessionState, apply_cmcd, valid_sid
from cadenza.abr.session_origin import note_media_request
from cadenza.manifests.model import Presentation
from cadenza.origin.keys import CLOCK, METRICS, POPULATION, SESSION_LOCKS, SESSIONS
from cadenza.origin.sessions import MemoryPopulationStore, MemorySessionStore
from cadenza.origin.tcp_info import Connection

log = logging.getLogger("cadenza.origin.telemetry")

# A further (pure) change of a session, given the request's CMCD (None for a request
# that carries none), stored in the same read-change-write as the fold.
Then = Callable[[SessionState, Cmcd | None], SessionState]


@dataclass(frozen=True, slots=True)
class Observed:
    """The session a request belongs to, after its CMCD was applied."""

    sid: str
    state: SessionState | None
    network_key: str | None
    sid_from_header: bool


async def ingest(
    app: web.Application,
    sid: str,
    cmcd: Cmcd,
    now_s: float,
    *,
    is_request: bool,
    track: str | None,
    network_key: str | None,
    delivery: Delivery | None = None,
    then: Then | None = None,
    also: Callable[[SessionState], Mapping[str, object]] | None = None,
    object_name: str | None = None,
) -> SessionState:
    """Fold one CMCD payload into the session ``sid`` and store it; ``then``
    changes the folded state further (pure, given ``cmcd``) before it is stored,
    inside the same read-change-write; ``also`` gives more fields of the folded state
    (:func:`cadenza.abr.session.apply_cmcd`'s, one copy of the session);
    ``object_name``: the requested file's name (apply_cmcd's)."""
    store = app[SESSIONS]
    metrics = app[METRICS]
    # The memory store counts sessions it evicted for room; others (Redis) bound
    # themselves and have no such count.
    evictions_before: int = getattr(store, "evictions", 0)
    locks = app.get(SESSION_LOCKS)  # None: the store never awaits between get and put
    if locks is None and isinstance(store, MemorySessionStore):  # no await at all
        state, changes = _change(
            store.get_now(sid),
            sid,
            cmcd,
            now_s,
            is_request,
            track,
            network_key,
            delivery,
            then,
            also,
            object_name,
        )
        store.put_now(state)
    else:
        async with contextlib.nullcontext() if locks is None else locks.hold(sid):
            state, changes = _change(
                await store.get(sid),
                sid,
                cmcd,
                now_s,
                is_request,
                track,
                network_key,
                delivery,
                then,
                also,
                object_name,
            )
            await store.put(state)
    evicted = getattr(store, "evictions", 0) - evictions_before
    if evicted > 0:
        metrics.sessions_evicted.inc(evicted)
    if changes.switched:
        metrics.bitrate_switches.inc()
    if changes.stalled:
        metrics.buffer_starvations.inc()
    # Histogram values are applied once per event-loop turn (origin.metrics_batch).
    batch = metrics.batch
    if changes.throughput_kbps is not None:
        batch.of(metrics.session_throughput_bps).observe(changes.throughput_kbps * 1000)
        if state.network_key is not None:
            population = app[POPULATION]
            estimate_bps = state.estimator.estimate_bps()
            if isinstance(population, MemoryPopulationStore):
                population.record_now(state.network_key, sid, estimate_bps)
            else:
                await population.record(state.network_key, sid, estimate_bps)
    if changes.bitrate_kbps is not None:
        batch.of(metrics.session_bitrate_bps).observe(changes.bitrate_kbps * 1000)
        batch.of(metrics.session_qoe).observe(state.qoe())
    if changes.new_session:
        metrics.sessions_active.set(await store.count())
    return state


def _change(
    previous: SessionState | None,
    sid: str,
    cmcd: Cmcd,
    now_s: float,
    is_request: bool,
    track: str | None,
    network_key: str | None,
    delivery: Delivery | None,
    then: Then | None,
    also: Callable[[SessionState], Mapping[str, object]] | None,
    object_name: str | None,
) -> tuple[SessionState, Changes]:
    """:func:`ingest`'s change of the session (pure)."""
    state, changes = apply_cmcd(
        previous,
        cmcd,
        now_s,
        sid=sid,
        is_request=is_request,
        track=track,
        network_key=network_key,
        delivery=delivery,
        also=also,
        object_name=object_name,
    )
    if then is not None:
        state = then(state, cmcd)
    return state, changes


async def observe_request(request: web.Request, track: str) -> Observed | None:
    """Fold a media request's CMCD into its session; None when it names no session."""
    # The hot path: most requests name no session; decide that without parsing.
    query_string = request.query_string
    headers = request.headers
    if (
        "CMCD" not in query_string
        and "sid" not in query_string
        and not any(name in headers for name in HEADER_NAMES)
    ):
        return None
    query = request.query
    return await observe(
        request.app,
        track,
        cmcd_query=query.get("CMCD"),
        sid_query=query.get("sid"),
        headers=headers,
        remote=request.remote,
        object_name=request.path.rpartition("/")[2],
    )


async def observe(
    app: web.Application,
    track: str,
    *,
    cmcd_query: str | None,
    sid_query: str | None,
    headers: Mapping[str, str],
    remote: str | None,
    then: Then | None = None,
    object_name: str | None = None,
) -> Observed | None:
    """:func:`observe_request` without the request object (origin.fastpath
    calls it too): the ``CMCD`` and ``sid`` query arguments, the request's
    headers (``CMCD-*``, ``ECT``) and the peer address.  ``then``: a further
    (pure) change of the session, stored with the fold; with only a ``sid``,
    applied to a session that exists.  ``object_name``: the requested file's
    name (the last segment of its path)."""
    metrics = app[METRICS]
    has_headers = any(name in headers for name in HEADER_NAMES)
    network_key = network_key_for(remote, headers)
    if cmcd_query is None and not has_headers:
        if sid_query is None or not valid_sid(sid_query):
            return None
        if then is None:
            return Observed(sid_query, await app[SESSIONS].get(sid_query), network_key, False)
        try:
            touched = await _touch(app, sid_query, then)
        except Exception:  # a session store must never fail a media request
            log.exception("session update failed for %s", sid_query[:64])
            touched = None
        return Observed(sid_query, touched, network_key, False)
    cmcd = parse_request_cmcd(cmcd_query, headers)
    if cmcd.malformed:
        metrics.cmcd_malformed.inc(len(cmcd.malformed))
    sid = cmcd.string("sid") or sid_query
    if sid is None or not valid_sid(sid):
        metrics.beacon("request", "no_session")
        return None
    try:
        state = await ingest(
            app,
            sid,
            cmcd,
            app[CLOCK](),
            is_request=True,
            track=track,
            network_key=network_key,
            then=then,
            object_name=object_name,
        )
    except Exception:  # a session store must never fail a media request
        log.exception("session update failed for %s", sid)
        metrics.beacon("request", "store_error")
        return Observed(sid, None, network_key, False)
    metrics.beacon("request", "malformed" if cmcd.malformed else "ok")
    from_header = "CMCD-Session" in headers and sid_query is None
    return Observed(sid, state, network_key, from_header)


async def _touch(app: web.Application, sid: str, then: Then) -> SessionState | None:
    """``then`` applied to the session ``sid`` if it exists, and stored."""
    store = app[SESSIONS]
    locks = app.get(SESSION_LOCKS)
    async with contextlib.nullcontext() if locks is None else locks.hold(sid):
        state = await store.get(sid)
        if state is None:
            return None
        state = then(state, None)
        await store.put(state)
    return state


def media_timing(
    now_s: float,
    object_bytes: int,
    segment_duration_s: float,
    connection: Connection | None,
    remote: str | None,
) -> Then:
    """The session change of a media object the origin serves itself: its own
    timing (:func:`cadenza.abr.session_origin.note_media_request`), with the delivery
    rate of the previous response when it went out on this same connection to the
    client itself (``remote``, the request's client: not for a request a proxy
    forwarded, :meth:`Connection.measures`), checked against this request's CMCD
    ``mtp`` and ``bl`` as the controller checks it (none when the request carries
    none: the values a session kept from an earlier request describe another
    object and another buffer), and this connection remembered for the next
    request."""
    if connection is not None and not connection.measures(remote):
        connection = None

    def note(state: SessionState, cmcd: Cmcd | None) -> SessionState:
        rate_bps = None
        if connection is not None and state.direct_peer == connection.peer:
            rate_bps = connection.delivery_rate_bps()
        return note_media_request(
            state,
            now_s,
            object_bytes=object_bytes,
            segment_duration_s=segment_duration_s,
            delivery_rate_bps=rate_bps,
            direct_peer=None if connection is None else connection.peer,
            measured_kbps=None if cmcd is None else cmcd.integer("mtp"),
            buffer_ms=None if cmcd is None else cmcd.integer("bl"),
        )

    return note


async def guidance_for(
    app: web.Application,
    presentation: Presentation,
    state: SessionState | None,
    network_key: str | None,
) -> Guidance:
    population = await app[POPULATION].prior(network_key) if network_key else None
    view = state.view() if state is not None else None
    return decide(ladder_bps(presentation), view, population, app[CLOCK]())
