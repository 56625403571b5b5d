"""CMCD in, guidance out: the HTTP edge of sessions and steering.

Every manifest and segment request is read for CMCD (query argument and
headers) and folded into its session; ``POST /v1/beacons`` takes the same
data in reporting mode (CMCD v2 ``application/cmcd`` bodies as hls.js's and
dash.js's event targets send them, or JSON).  ``GET /v1/sessions`` and
``/v1/sessions/{sid}`` report sessions.  Nothing here can fail a media
request: a broken payload is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from cadenza.abr.ladder import (
    recommend_ladder,
    render_ladder_toml,
    traces_from_estimates,
)
from cadenza.abr.policy import Guidance, decide
from cadenza.manifests.model import Codec, Presentation
from cadenza.origin.cmcd import (
    HEADER_NAMES,
    Cmcd,
    from_json_object,
    parse_cmcd_lines,
    parse_request_cmcd,
)
from cadenza.origin.errors import (
    BadBeaconError,
    ForbiddenPathError,
    NotEnoughDataError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    SessionNotFoundError,
    UnsupportedMediaTypeError,
)
from cadenza.origin.keys import (
    BEACON_LIMITER,
    CACHE,
    METRICS,
    POPULATION,
    PRESENTATIONS,
    SESSION_LOCKS,
    SESSIONS,
    SETTINGS,
)
from cadenza.origin.paths import safe_key
from cadenza.origin.sessions import (
    Delivery,
    SessionState,
    apply_cmcd,
    network_key_for,
    valid_sid,
)
from cadenza.origin.steering import ladder_bps

log = logging.getLogger("cadenza.origin.telemetry")

LADDER_MAX_SESSIONS = 10_000
CMCD_CONTENT_TYPES = frozenset({"application/cmcd", "text/plain", "text/cmcd"})


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
) -> SessionState:
    store = app[SESSIONS]
    metrics = app[METRICS]
    # The memory store counts sessions it evicted for room; others (Redis) bound
    # themselves and have no such count.
    evictions_before: int = getattr(store, "evictions", 0)
    locks = app.get(SESSION_LOCKS)  # None: the memory store never awaits between get and put
    async with contextlib.nullcontext() if locks is None else locks.hold(sid):
        state, changes = apply_cmcd(
            await store.get(sid),
            cmcd,
            now_s,
            sid=sid,
            is_request=is_request,
            track=track,
            network_key=network_key,
            delivery=delivery,
        )
        await store.put(state)
    evicted = getattr(store, "evictions", 0) - evictions_before
    if evicted > 0:
        metrics.sessions_evicted.inc(evicted)
    if changes.switched:
        metrics.bitrate_switches.inc()
    if changes.stalled:
        metrics.buffer_starvations.inc()
    if changes.throughput_kbps is not None:
        metrics.session_throughput_kbps.observe(changes.throughput_kbps)
        if state.network_key is not None:
            await app[POPULATION].record(state.network_key, sid, state.estimator.estimate_bps())
    if changes.bitrate_kbps is not None:
        metrics.session_bitrate_kbps.observe(changes.bitrate_kbps)
        metrics.session_qoe.observe(state.qoe())
    if changes.new_session:
        metrics.sessions_active.set(await store.count())
    return state


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
    )


async def observe(
    app: web.Application,
    track: str,
    *,
    cmcd_query: str | None,
    sid_query: str | None,
    headers: Mapping[str, str],
    remote: str | None,
) -> Observed | None:
    """:func:`observe_request` without the request object (origin.fastpath
    calls it too): the ``CMCD`` and ``sid`` query arguments, the request's
    headers (``CMCD-*``, ``ECT``) and the peer address."""
    metrics = app[METRICS]
    has_headers = any(name in headers for name in HEADER_NAMES)
    network_key = network_key_for(remote, headers)
    if cmcd_query is None and not has_headers:
        if sid_query is None or not valid_sid(sid_query):
            return None
        return Observed(sid_query, await app[SESSIONS].get(sid_query), network_key, False)
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
            time.time(),
            is_request=True,
            track=track,
            network_key=network_key,
        )
    except Exception:  # a session store must never fail a media request
        log.exception("session update failed for %s", sid)
        metrics.beacon("request", "store_error")
        return Observed(sid, None, network_key, False)
    metrics.beacon("request", "malformed" if cmcd.malformed else "ok")
    from_header = "CMCD-Session" in headers and sid_query is None
    return Observed(sid, state, network_key, from_header)


async def guidance_for(
    app: web.Application,
    presentation: Presentation,
    state: SessionState | None,
    network_key: str | None,
) -> Guidance:
    population = await app[POPULATION].prior(network_key) if network_key else None
    view = state.view() if state is not None else None
    return decide(ladder_bps(presentation), view, population, time.time())


def _entries(body: bytes, content_type: str, limit: int) -> list[Cmcd]:
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadBeaconError(f"body is not valid JSON: {exc}") from None
        items = data if isinstance(data, list) else [data]
        if len(items) > limit:
            raise BadBeaconError(f"{len(items)} payloads in one body; the limit is {limit}")
        if not all(isinstance(item, dict) for item in items):
            raise BadBeaconError("expected a JSON object or an array of objects")
        return [from_json_object(item) for item in items]
    if content_type in CMCD_CONTENT_TYPES:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBeaconError("body is not UTF-8") from None
        entries = parse_cmcd_lines(text)
        if len(entries) > limit:
            raise BadBeaconError(f"{len(entries)} payloads in one body; the limit is {limit}")
        return entries
    raise UnsupportedMediaTypeError(
        f"Content-Type {content_type or '(none)'} is not accepted; "
        "send application/cmcd (one CMCD dictionary a line) or application/json"
    )


def _delivery(app: web.Application, cmcd: Cmcd) -> Delivery | None:
    """Response-mode ``url`` + ``ttlb``: size from the cache, time from the player."""
    url = cmcd.string("url")
    ttlb_ms = cmcd.integer("ttlb")
    if not url or not ttlb_ms:
        return None
    try:
        key = safe_key(urlsplit(url).path)
    except (ForbiddenPathError, ValueError):
        return None
    cached = app[CACHE].peek(key)
    if cached is None:
        return None
    return Delivery(len(cached.body), ttlb_ms / 1000.0)


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, however it is split on the wire, in at most ``timeout_s``.

    ``413`` past ``limit`` bytes (read no further), ``408`` when the client is too
    slow: a stalled or dribbling sender must not hold a handler for ever."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(size, limit)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s"
        ) from None
    return b"".join(chunks)


async def handle_beacons(request: web.Request) -> web.Response:
    """``POST /v1/beacons``: CMCD in reporting mode.  ``204`` when anything was used."""
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    limit = settings.beacon_max_bytes
    if request.content_length is not None and request.content_length > limit:
        metrics.beacon("post", "too_large")
        raise PayloadTooLargeError(request.content_length, limit)
    try:
        body = await read_body(request, limit, settings.body_timeout_s)
    except PayloadTooLargeError:
        metrics.beacon("post", "too_large")
        raise
    except RequestTimeoutError:
        metrics.beacon("post", "timeout")
        raise
    try:
        entries = _entries(body, request.content_type, settings.beacon_max_entries)
    except (BadBeaconError, UnsupportedMediaTypeError):
        metrics.beacon("post", "invalid")
        raise
    if not entries:
        metrics.beacon("post", "invalid")
        raise BadBeaconError("the body holds no CMCD payload")
    default_sid = request.query.get("sid")
    network_key = network_key_for(request.remote, request.headers)
    now_s = time.time()
    used = limited = 0
    reasons: list[str] = []
    for cmcd in entries:
        if cmcd.malformed:
            metrics.cmcd_malformed.inc(len(cmcd.malformed))
            reasons.extend(f"{m.key}: {m.reason}" for m in cmcd.malformed[:3])
        sid = cmcd.string("sid") or default_sid
        if sid is None or not valid_sid(sid):
            metrics.beacon("post", "no_session")
            reasons.append("payload without a valid sid")
            continue
        if not app[BEACON_LIMITER].allow(sid, now_s):
            metrics.beacon("post", "rate_limited")
            limited += 1
            continue
        await ingest(
            app,
            sid,
            cmcd,
            now_s,
            is_request=False,
            track=None,
            network_key=network_key,
            delivery=_delivery(app, cmcd),
        )
        metrics.beacon("post", "malformed" if cmcd.malformed else "ok")
        used += 1
    if used:
        return web.Response(status=204)
    if limited:
        raise RateLimitedError(
            f"{limited} payloads over the per-session limit of "
            f"{settings.beacon_rate_per_s:g}/s (burst {settings.beacon_burst})",
            retry_after_s=max(1, round(1 / max(settings.beacon_rate_per_s, 1e-3))),
        )
    raise BadBeaconError("no usable payload: " + "; ".join(reasons[:5]))


async def _report(app: web.Application, state: SessionState) -> dict[str, object]:
    report = state.to_dict()
    parsed = app[PRESENTATIONS].get(state.track) if state.track else None
    if parsed is not None:
        guidance = await guidance_for(app, parsed[1], state, state.network_key)
        report["recommended_max_bitrate_kbps"] = guidance.max_bitrate_bps // 1000
        report["guidance"] = guidance.to_dict()
    else:
        report["recommended_max_bitrate_kbps"] = None
        report["guidance"] = None
    return report


async def handle_session(request: web.Request) -> web.Response:
    sid = request.match_info["sid"]
    state = await request.app[SESSIONS].get(sid) if valid_sid(sid) else None
    if state is None:
        raise SessionNotFoundError(f"no active session {sid[:64]!r}")
    return web.json_response(
        await _report(request.app, state), headers={"Cache-Control": "no-store"}
    )


def _small_number(text: str) -> bool:
    """ASCII digits only, and few of them: ``str.isdigit`` is also true for '²'
    (which ``int`` refuses), and ``int`` refuses more than 4300 digits."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


async def handle_sessions(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit", "100")
    if not _small_number(raw_limit) or not 0 < int(raw_limit) <= 10_000:
        raise BadBeaconError(f"limit={raw_limit[:20]!r}: expected 1..10000")
    states = await request.app[SESSIONS].active()
    states.sort(key=lambda s: s.last_seen_s, reverse=True)
    estimates = [s.estimate_kbps for s in states if s.estimate_kbps is not None]
    summary = {
        "active": len(states),
        "with_throughput": len(estimates),
        "median_throughput_kbps": (
            round(sorted(estimates)[len(estimates) // 2], 1) if estimates else None
        ),
        "stalls": sum(s.stalls for s in states),
        "switches": sum(s.switches for s in states),
    }
    sessions = [
        {
            "sid": s.sid,
            "cid": s.cid,
            "track": s.track,
            "last_seen_s": round(s.last_seen_s, 3),
            "throughput_estimate_kbps": (
                round(s.estimate_kbps, 1) if s.estimate_kbps is not None else None
            ),
            "last_bl_ms": s.last_bl_ms,
            "last_br_kbps": s.last_br_kbps,
            "switches": s.switches,
            "stalls": s.stalls,
        }
        for s in states[: int(raw_limit)]
    ]
    return web.json_response(
        {"summary": summary, "sessions": sessions}, headers={"Cache-Control": "no-store"}
    )


MIN_SESSIONS_FOR_LADDER = 5


async def handle_ladder_recommendation(request: web.Request) -> web.Response:
    """``GET /v1/ladder/recommendation?codec=aac&max_rungs=4``: the ladder the live
    sessions' throughput asks for (the same search as ``cadenza ladder recommend``)."""
    codec_text = request.query.get("codec", "aac")
    if codec_text not in ("aac", "opus"):
        raise BadBeaconError(f"codec={codec_text[:20]!r}: expected aac or opus")
    rungs_text = request.query.get("max_rungs", "4")
    if not _small_number(rungs_text) or not 1 <= int(rungs_text) <= 5:
        raise BadBeaconError(f"max_rungs={rungs_text[:20]!r}: expected 1..5")
    estimates = await request.app[POPULATION].samples()
    if len(estimates) < MIN_SESSIONS_FOR_LADDER:
        raise NotEnoughDataError(
            f"{len(estimates)} sessions with a throughput so far; "
            f"a recommendation needs at least {MIN_SESSIONS_FOR_LADDER}"
        )
    traces = traces_from_estimates(estimates[:LADDER_MAX_SESSIONS])
    # CPU-bound (hundreds of simulated sessions): keep it off the event loop.
    recommendation = await asyncio.get_running_loop().run_in_executor(
        None,
        functools.partial(
            recommend_ladder, traces, codec=Codec(codec_text), max_rungs=int(rungs_text)
        ),
    )
    body = recommendation.to_dict()
    body["sessions"] = len(estimates)
    body["ladder_toml"] = render_ladder_toml(recommendation)
    return web.json_response(body, headers={"Cache-Control": "no-store"})
