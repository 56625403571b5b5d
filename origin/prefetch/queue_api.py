"""``POST /v1/sessions/{sid}/queue``: a player or an app states what the session
plays next, ``{"tracks": ["id1", "id2", ...]}`` (track ids, in order).  It
replaces the session's queue; its next track outranks learned transitions
(probability 1).

Refused: a body over ``beacon_max_bytes`` (``413 payload_too_large``), more than
``prefetch_queue_max`` ids (``413 queue_too_long``), anything but that JSON shape
or an id the origin would not serve a track folder under (``400 bad_queue``,
naming the first problem), and more than a few queues a second from one
client address (``429``, like beacons per session)."""

from __future__ import annotations

import json
import time

from aiohttp import web

from cadenza.abr.session import valid_sid
from cadenza.origin.beacons import read_body
from cadenza.origin.errors import RateLimitedError
from cadenza.origin.keys import SETTINGS
from cadenza.origin.prefetch.engine import PREFETCHER, QUEUE_RATE_PER_S, Prefetcher
from cadenza.origin.prefetch.errors import BadQueueError, QueueTooLongError
from cadenza.origin.prefetch.plan import is_track_id


def parse_queue(body: bytes, limit: int) -> tuple[str, ...]:
    """The track ids of a queue body; raises :class:`BadQueueError` or
    :class:`QueueTooLongError`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadQueueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tracks"), list):
        raise BadQueueError('expected a JSON object {"tracks": ["track-id", ...]}')
    tracks = data["tracks"]
    if len(tracks) > limit:
        raise QueueTooLongError(len(tracks), limit)
    for index, track in enumerate(tracks):
        if not isinstance(track, str) or not is_track_id(track):
            shown = track[:64] if isinstance(track, str) else type(track).__name__
            raise BadQueueError(f"tracks[{index}] = {shown!r} is not a track id")
    return tuple(tracks)


async def handle_queue(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    prefetcher: Prefetcher = app[PREFETCHER]
    sid = request.match_info["sid"]
    if not valid_sid(sid):
        raise BadQueueError("the session id must be 1 to 128 printable characters")
    if not prefetcher.queue_limiter.allow(request.remote or "", time.time()):
        raise RateLimitedError(
            f"over {QUEUE_RATE_PER_S:g} queues per second from one client",
            retry_after_s=1,
        )
    body = await read_body(request, settings.beacon_max_bytes, settings.body_timeout_s)
    tracks = parse_queue(body, settings.prefetch_queue_max)
    prefetcher.state_queue(sid, tracks)
    return web.json_response(
        {"sid": sid, "queue": list(tracks)}, headers={"Cache-Control": "no-store"}
    )
