"""The live application keys, and the one question the answer core asks of live."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from cadenza.manifests.media_types import is_manifest
from cadenza.origin.keys import CACHE
from cadenza.origin.live.open_segment import SegmentFeeds
from cadenza.origin.live.watch import LiveTracks, LiveWatch

LIVE_TRACKS: Final = web.AppKey("live_tracks", LiveTracks)
SEGMENT_FEEDS: Final = web.AppKey("segment_feeds", SegmentFeeds)


async def live_watch_for(app: web.Application, key: str) -> LiveWatch | None:
    """The watch of the live track ``key`` is in (``<track>/live.json`` exists),
    else None.  A media file in the hot cache is never a live track's own answer
    (a complete part or segment is an immutable file), so its track is not asked
    about: a VOD segment from the cache never waits on storage for this.  A
    manifest always is (a stored one may have been cached before its track went
    live).  A VOD track's answer is remembered (``watch.NOT_LIVE_TTL_S``)."""
    tracks = app.get(LIVE_TRACKS)
    if tracks is None or (not is_manifest(key) and app[CACHE].peek(key) is not None):
        return None
    return await tracks.watch(key.partition("/")[0])


async def is_live_track(app: web.Application, key: str) -> bool:
    """Whether ``key`` is in a live track (:func:`live_watch_for`): its manifests
    are rendered per request by :mod:`cadenza.origin.live.serve`."""
    return await live_watch_for(app, key) is not None


async def live_watch_of(app: web.Application, track: str) -> LiveWatch | None:
    """The watch of live ``track``, whatever the hot cache holds; None when it is
    not live."""
    tracks = app.get(LIVE_TRACKS)
    return None if tracks is None else await tracks.watch(track)


async def has_live_state(app: web.Application, track: str) -> bool:
    """Whether ``track`` is live, whatever the hot cache holds (a session's media
    request asks it only once the track's VOD model is found missing)."""
    return await live_watch_of(app, track) is not None
