"""``POST /v1/beacons``: CMCD in reporting mode (CTA-5004).

CMCD v2 ``application/cmcd`` bodies (one CMCD dictionary a line), as hls.js's
and dash.js's event targets send them, or JSON; each payload is folded into its
session like a request's CMCD (:func:`cadenza.origin.telemetry.ingest`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from cadenza.abr.cmcd import Cmcd, parse_cmcd_lines
from cadenza.abr.cmcd_json import from_json_object
from cadenza.abr.population import network_key_for
from cadenza.abr.session import Delivery, valid_sid
from cadenza.origin.errors import (
    BadBeaconError,
    ForbiddenPathError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from cadenza.origin.keys import BEACON_LIMITER, CACHE, METRICS, SETTINGS
from cadenza.origin.paths import safe_key
from cadenza.origin.prefetch.beacon_nor import note_beacon
from cadenza.origin.telemetry import ingest

CMCD_CONTENT_TYPES: Final = frozenset({"application/cmcd", "text/plain", "text/cmcd"})


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
        note_beacon(app, sid, cmcd)  # its nor, for prefetch (origin.prefetch)
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
