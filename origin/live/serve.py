"""The answers of a live track (one with ``<track>/live.json``), on the aiohttp
path: every manifest rendered per request from the watched model, blocking
playlist reload, hinted parts held until written, the open segment streamed,
``live.json`` never served; complete parts, segments and init segments are
left to the answer core as any immutable file.

Allowlist: of a live track only ``master.m3u8``, ``manifest.mpd``, and per
rendition ``playlist.m3u8``, ``init-<n>.mp4``, ``seg-NNNNN.m4s`` and
``seg-NNNNN.pK.m4s`` are answered; every other name is ``404``.

Caching (RFC 9111 5.2.2.1 max-age; the edge keys manifests on the LL-HLS query
arguments, deploy/nginx/edge.conf.template):

- A plain reload of a media playlist, the master playlist and the MPD: at most
  one part duration (whole seconds, so ``max-age=0`` with sub-second parts).
  RFC 8216bis 6.2.2's "half the target duration" is for playlists that change
  once a segment; an LL playlist changes every part.
- A blocking reload's answer (``_HLS_msn``): the playlist holding that part,
  which stays a correct answer to that query, so it may be cached for up to one
  segment target, as Apple's LL-HLS guidance for CDNs allows; the edge keys it
  on the query, so a later part's request never gets it.
- An ended stream's manifests never change again: the VOD ``manifest_max_age_s``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from cadenza.manifests.live import LIVE_STATE_NAME, LivePresentation, LiveRendition
from cadenza.manifests.lldash import render_live_mpd
from cadenza.manifests.llhls import render_live_master, render_live_media_playlist
from cadenza.manifests.media_types import cache_control_for, is_manifest
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PLAYLIST_NAME
from cadenza.manifests.steering import SteeringConfig
from cadenza.origin.core.heads import cors_fields
from cadenza.origin.core.routes import RouteClass, route_class
from cadenza.origin.errors import ObjectNotFoundError
from cadenza.origin.keys import CLOCK, METRICS, SETTINGS, STORAGE
from cadenza.origin.live.blocking import (
    Directives,
    answered_by,
    block_timeout_s,
    check_not_too_far,
    parse_directives,
)
from cadenza.origin.live.cmsd import live_cmsd_for
from cadenza.origin.live.errors import DeliveryDirectiveError, LiveNotReadyError
from cadenza.origin.live.keys import LIVE_TRACKS, SEGMENT_FEEDS, live_watch_for
from cadenza.origin.live.open_segment import SegmentFeeds, find_segment
from cadenza.origin.live.watch import LiveTracks, LiveWatch
from cadenza.origin.metrics_live import BlockingOutcome
from cadenza.origin.rendering import filter_values, private_control, select
from cadenza.origin.telemetry import observe_request

TIME_PATH: Final = "/v1/time"
M3U8_TYPE: Final = "application/vnd.apple.mpegurl"
MPD_TYPE: Final = "application/dash+xml"
_PART: Final = re.compile(r"seg-(\d{5,})\.p(\d+)\.m4s")
_SEGMENT: Final = re.compile(r"seg-(\d{5,})\.m4s")
_INIT: Final = re.compile(r"init-\d+\.mp4")
_LIVE_ROUTES: Final = frozenset({RouteClass.MANIFEST, RouteClass.SEGMENT})


async def live_ctx(app: web.Application) -> AsyncIterator[None]:
    """The live watches and open-segment feeds, stopped with the app."""
    settings = app[SETTINGS]
    tracks = LiveTracks(lambda: app[STORAGE], settings.live_poll_s, app[METRICS].live)
    feeds = SegmentFeeds(lambda: app[STORAGE])
    app[LIVE_TRACKS] = tracks
    app[SEGMENT_FEEDS] = feeds
    yield
    feeds.close()
    await tracks.close()


def add_live(app: web.Application) -> None:
    """``GET /v1/time`` and the live watches (``create_app`` calls it)."""
    app.cleanup_ctx.append(live_ctx)
    app.router.add_get(TIME_PATH, handle_time)


async def handle_time(request: web.Request) -> web.Response:
    """The origin's wall clock, for DASH ``UTCTiming`` with
    ``urn:mpeg:dash:utc:http-iso:2014`` (ISO/IEC 23009-1 5.8.5.7): an ISO 8601
    instant in UTC with milliseconds; never cached (it is the clock)."""
    now = datetime.fromtimestamp(request.app[CLOCK](), tz=UTC)
    text = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return web.Response(text=text, content_type="text/plain", headers={"Cache-Control": "no-store"})


def reload_control(presentation: LivePresentation, manifest_max_age_s: int) -> str:
    if presentation.ended:
        return f"public, max-age={manifest_max_age_s}"
    return f"public, max-age={presentation.part_target_us // 1_000_000}"


def blocking_control(presentation: LivePresentation, manifest_max_age_s: int) -> str:
    if presentation.ended:
        return f"public, max-age={manifest_max_age_s}"
    return f"public, max-age={max(1, presentation.segment_target_us // 1_000_000)}"


def _text(body: bytes, content_type: str, control: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            "Content-Type": content_type,
            "Cache-Control": control,
            "X-Cadenza-Cache": "live",
        },
    )


def time_url(request: web.Request) -> str:
    return f"{request.url.origin()}{TIME_PATH}"


async def answer_live(
    request: web.Request,
    key: str,
    *,
    steering: SteeringConfig | None = None,
    personal_pathways: bool = False,
) -> web.StreamResponse | None:
    """The answer to ``key`` when its track is live and the answer is live's own;
    None for everything the answer core serves as it does for VOD (a track that
    is not live, a complete part or segment, an init segment).  ``live.json``
    itself is never served (``404``), live or not.  ``steering``: the track's
    content-steering block for its master playlist or MPD, as for VOD
    (``personal_pathways``: it names this viewer's token or Host, so the answer is
    ``private``)."""
    name = key.partition("/")[2]
    if name == LIVE_STATE_NAME:
        raise ObjectNotFoundError("a live track's state is not served")
    if route_class("/" + key) not in _LIVE_ROUTES:
        return None
    watch = await live_watch_for(request.app, key)
    if watch is None:
        return None
    settings = request.app[SETTINGS]
    model = watch.model
    control = reload_control(model, settings.manifest_max_age_s)
    if is_manifest(name):  # a session's CMCD is folded in, as for a VOD manifest
        await observe_request(request, watch.track)
    if name in (MASTER_NAME, MPD_NAME):
        selected = filter_values(request.query)
        if personal_pathways:
            control = private_control(control)
        if name == MASTER_NAME:

            def master() -> str:
                return render_live_master(select(model, selected), steering)

            body = watch.rendered(model, (name, selected, steering), master)
            return _text(body, M3U8_TYPE, control)
        url = time_url(request)

        def mpd() -> str:
            filtered = select(model, selected)
            return render_live_mpd(filtered, time_url=url, steering=steering)

        return _text(watch.rendered(model, (name, selected, steering, url), mpd), MPD_TYPE, control)
    rendition_id, slash, file = name.partition("/")
    if slash and "/" not in file and _has_rendition(model, rendition_id):
        if file == PLAYLIST_NAME:
            return await _media_playlist(request, watch, rendition_id)
        if _INIT.fullmatch(file):
            return None
        part = _PART.fullmatch(file)
        if part is not None:
            await _hold_hinted_part(watch, rendition_id, int(part[1]), int(part[2]))
            return None
        segment = _SEGMENT.fullmatch(file)
        if segment is not None:
            return await _open_segment(request, watch, rendition_id, int(segment[1]))
    raise ObjectNotFoundError(f"{key}: not a file of a live track")


def _has_rendition(model: LivePresentation, rendition_id: str) -> bool:
    return any(r.id == rendition_id for r in model.renditions)


def _rendition_of(rendition_id: str) -> Callable[[LivePresentation], LiveRendition | None]:
    def find(model: LivePresentation) -> LiveRendition | None:
        for rendition in model.renditions:
            if rendition.id == rendition_id:
                return rendition
        return None

    return find


async def _media_playlist(
    request: web.Request, watch: LiveWatch, rendition_id: str
) -> web.Response:
    app = request.app
    metrics = app[METRICS].live
    settings = app[SETTINGS]
    try:
        directives = parse_directives(request.query)
        model = watch.model
        if directives.blocking and not model.ended:
            check_not_too_far(model, model.rendition(rendition_id), directives)
    except DeliveryDirectiveError:
        metrics.blocking_done(BlockingOutcome.BAD)
        raise
    if directives.blocking and not model.ended:
        rendition = _rendition_of(rendition_id)

        def reached(p: LivePresentation) -> bool:
            found = rendition(p)
            return p.ended or found is None or answered_by(found, directives)

        timeout_s = block_timeout_s(model)
        got = await watch.wait_until(reached, timeout_s)
        if got is None or rendition(got) is None:
            metrics.blocking_done(BlockingOutcome.TIMED_OUT)
            raise LiveNotReadyError(watch.track, _asked(rendition_id, directives), timeout_s)
        metrics.blocking_done(BlockingOutcome.ANSWERED)
        model = got
    skip = directives.skip

    def playlist() -> str:
        return render_live_media_playlist(model, rendition_id, skip=skip, now_ms=model.updated_ms)

    body = watch.rendered(model, (PLAYLIST_NAME, rendition_id, skip), playlist)
    if directives.blocking:
        control = blocking_control(model, settings.manifest_max_age_s)
    else:
        control = reload_control(model, settings.manifest_max_age_s)
    return _text(body, M3U8_TYPE, control)


def _asked(rendition_id: str, directives: Directives) -> str:
    part = "" if directives.part is None else f" part {directives.part}"
    return f"{rendition_id} segment {directives.msn}{part}"


def _part_listed(model: LivePresentation, rendition_id: str, number: int, index: int) -> bool:
    for rendition in model.renditions:
        if rendition.id == rendition_id:
            return any(s.number == number and len(s.parts) > index for s in rendition.segments)
    return False


async def _hold_hinted_part(watch: LiveWatch, rendition_id: str, number: int, index: int) -> None:
    """A part the playlist does not list yet but may hint
    (``EXT-X-PRELOAD-HINT``): the request is held until the part is written
    (RFC 8216bis 6.2.6), within three target durations (then ``503``).  A part
    further ahead than the next one is left to the file lookup (``404``)."""
    model = watch.model
    if model.ended or _part_listed(model, rendition_id, number, index):
        return
    rendition = model.rendition(rendition_id)
    if rendition.segments:
        last = rendition.segments[-1]
        hinted = (number == last.number and not last.complete and index == len(last.parts)) or (
            number == last.number + 1 and index == 0
        )
    else:
        hinted = index == 0
    if not hinted:
        return
    timeout_s = block_timeout_s(model)
    got = await watch.wait_until(lambda p: _part_listed(p, rendition_id, number, index), timeout_s)
    if got is None:
        raise LiveNotReadyError(
            watch.track, f"{rendition_id} segment {number} part {index}", timeout_s
        )


async def _open_segment(
    request: web.Request, watch: LiveWatch, rendition_id: str, number: int
) -> web.StreamResponse | None:
    """The open segment, streamed (``open_segment``); None when it is complete
    (an immutable file), or not this track's open or next segment."""
    if request.method != "GET":
        return None
    model = watch.model
    timeout_s = block_timeout_s(model)
    segment = find_segment(watch.model, rendition_id, number)
    if segment is None:
        rendition = model.rendition(rendition_id)
        last = rendition.segments[-1].number if rendition.segments else 0
        if model.ended or number != last + 1:
            return None
        got = await watch.wait_until(
            lambda p: find_segment(p, rendition_id, number) is not None, timeout_s
        )
        if got is None:
            raise LiveNotReadyError(watch.track, f"{rendition_id} segment {number}", timeout_s)
        segment = find_segment(watch.model, rendition_id, number)
    if segment is None or segment.complete:
        return None
    app = request.app
    observed = await observe_request(request, watch.track)  # answered here, not by the core
    settings = app[SETTINGS]
    metrics = app[METRICS].live
    feed = app[SEGMENT_FEEDS].feed(watch, rendition_id, number, timeout_s)
    # The same bytes as the whole segment's file, which never changes.
    control = cache_control_for(
        f"{rendition_id}/{segment.name}", segment_max_age_s=settings.segment_max_age_s
    )
    headers = {"Content-Type": "audio/mp4", "X-Cadenza-Cache": "live", **cors_fields(settings)}
    if observed is not None and settings.guidance:  # a known session: CMSD, as the core's
        cmsd = await live_cmsd_for(app, f"{watch.track}/{rendition_id}/{segment.name}", observed)
        if cmsd is not None:
            headers["CMSD-Static"], headers["CMSD-Dynamic"] = cmsd
            control = private_control(control)
    headers["Cache-Control"] = control
    response = web.StreamResponse(status=200, headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    metrics.blocked_requests.inc()
    try:
        while True:
            chunks = await feed.follow(sent)
            if chunks is None:  # aborted: close without the last chunk (RFC 9112 7.1)
                metrics.open_segment_streams.labels("aborted").inc()
                if request.transport is not None:
                    request.transport.abort()
                return response
            if not chunks:
                break
            try:
                for chunk in chunks:
                    await response.write(chunk)
            except ConnectionResetError:  # the client left: nothing more to send
                return response
            sent += len(chunks)
    finally:
        metrics.blocked_requests.dec()
    await response.write_eof()
    metrics.open_segment_streams.labels("complete").inc()
    return response
