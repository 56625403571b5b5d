"""The origin application: ``create_app(settings)``, its routes, and the
media route's handler.

Routes: ``/healthz`` (liveness), ``/readyz`` (storage reachable), ``/metrics``
(Prometheus), the player page (:mod:`.player`), the JSON API under ``/v1/``,
and every file below a track folder (``/<track_id>/...``), answered by the
answer core the fast transport shares (:mod:`.core`).  Every answer passes the
edge (:mod:`.edge`: HTTP version, access checks from :mod:`.access`, CORS,
one table of error responses); objects too large to cache are streamed
(:mod:`.large`); storage and Redis open and close with the app
(:mod:`.lifecycle`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from cachetools import LRUCache

from cadenza.manifests.model import MASTER_NAME
from cadenza.manifests.steering import SteeringConfig
from cadenza.origin.access import AUTH_CHECK_PATH, MediaTarget, handle_auth_check, media_key
from cadenza.origin.beacons import handle_beacons
from cadenza.origin.cache import HotCache
from cadenza.origin.content_steering import handle_pathways, handle_steering, steering_config
from cadenza.origin.core.answer import choose_object
from cadenza.origin.core.group_segments import GroupSegments
from cadenza.origin.core.heads import SERVER_NAME, HeadStyle
from cadenza.origin.core.routes import is_track_manifest
from cadenza.origin.edge import edge_middleware
from cadenza.origin.errors import BadRequestError, ObjectNotFoundError, ObjectTooLargeError
from cadenza.origin.keys import (
    BEACON_LIMITER,
    CACHE,
    CLOCK,
    GROUP_SEGMENTS,
    IP_LIMITER,
    METRICS,
    POPULATION,
    PRESENTATIONS,
    RENDERED,
    SESSIONS,
    SETTINGS,
    SIGNING_KEYS,
    STORAGE,
    STORE_HEALTH,
)
from cadenza.origin.large import serve_large
from cadenza.origin.licences import add_licence_routes, viewer_root_url
from cadenza.origin.lifecycle import WRAP_STORAGE, WrapStorage, redis_ctx, storage_ctx
from cadenza.origin.live.serve import add_live, answer_live
from cadenza.origin.metrics import Metrics, create_metrics
from cadenza.origin.objects import (
    HEAD_STYLE,
    RENDERED_MAX_BYTES,
)
from cadenza.origin.pathway_health import PATHWAY_MONITOR, content_steering_ctx
from cadenza.origin.player import (
    check_player_libs,
    handle_player_lib,
    handle_player_page,
    handle_root,
)
from cadenza.origin.prefetch.hooks import add_prefetch, note_first_byte
from cadenza.origin.proxies import TrustedProxies, client_middleware
from cadenza.origin.session_api import handle_ladder_recommendation, handle_session, handle_sessions
from cadenza.origin.sessions import MemoryPopulationStore, MemorySessionStore, RateLimiter
from cadenza.origin.settings import Settings
from cadenza.origin.transport.aio import describe_media_request, object_response


def _steering(request: web.Request, target: MediaTarget) -> tuple[SteeringConfig | None, bool]:
    """A track manifest's content-steering block (None without pathways), and
    whether it is this viewer's: its pathway URIs carry this viewer's token,
    or its steering server was named after the request's Host header; either
    way not for a shared cache."""
    if not is_track_manifest(target.key):
        return None, False
    track, _, name = target.key.partition("/")
    settings = request.app[SETTINGS]
    steering = steering_config(
        settings,
        request.app.get(PATHWAY_MONITOR),
        track,
        "hls" if name == MASTER_NAME else "dash",
        origin_url=f"{request.scheme}://{request.host}",
        token=target.token,
    )
    personal = steering is not None and bool(target.token or not settings.content_steering_url)
    return steering, personal


async def handle_file(request: web.Request) -> web.StreamResponse:
    """Every file below a track folder: the answer core's
    (``core.answer.choose_object``), or streamed when too large to cache."""
    target = media_key(request, request.raw_path.split("?", 1)[0])  # the token, parsed once
    key = target.key
    if "/" not in key:
        raise ObjectNotFoundError("only files inside a track folder are served")
    steering, personal = _steering(request, target)
    # A live track's own answers (origin.live).
    live = await answer_live(request, key, steering=steering, personal_pathways=personal)
    if live is not None:
        return live
    asked = describe_media_request(request, key)
    try:
        choice = await choose_object(
            request.app,
            asked,
            steering=steering,
            personal_pathways=personal,
            root_url=lambda: viewer_root_url(request, target.token),
        )
    except ObjectTooLargeError:  # its CMCD is folded in, as for any file
        return await serve_large(request, key)
    response = object_response(request, asked, choice)
    note_first_byte(request.app, choice, asked.started_s)
    return response


async def handle_tracks(request: web.Request) -> web.Response:
    tracks = await request.app[STORAGE].list_tracks()
    return web.json_response({"tracks": tracks}, headers={"Cache-Control": "no-cache"})


async def handle_healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    await request.app[STORAGE].ping()
    body = {"status": "ready", "storage": request.app[STORAGE].name}
    health = request.app.get(STORE_HEALTH)
    if health is not None:  # a Redis outage is reported, not fatal: local state serves
        body["redis"] = "up" if await health.check() else "down"
    return web.json_response(body)


async def handle_metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(),
        headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
            "Cache-Control": "no-store",
        },
    )


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
    wrap_storage: WrapStorage | None = None,
) -> web.Application:
    """The origin.  ``clock``: the time origin-decided ABR reads (seconds);
    ``wrap_storage``: builds the storage the app reads from around the one the
    settings name (``cadenza serve --sources``: the just-in-time store)."""
    trusted = TrustedProxies.of(settings.trusted_proxies)
    # Behind trusted proxies, request.remote is the client's before anything reads it.
    middlewares: list[Middleware] = [edge_middleware]
    if trusted is not None:
        middlewares.insert(0, client_middleware(trusted))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app.on_response_prepare.append(_name_server)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    if wrap_storage is not None:
        app[WRAP_STORAGE] = wrap_storage
    app[HEAD_STYLE] = HeadStyle.of(settings)
    app[SIGNING_KEYS] = tuple(key.encode("utf-8") for key in settings.signing_keys)
    app[METRICS] = metrics or create_metrics(shared_sessions=settings.redis_url is not None)
    app[CACHE] = HotCache(
        settings.cache_max_bytes, settings.cache_max_object_bytes, settings.manifest_max_age_s
    )
    app[PRESENTATIONS] = {}
    app[RENDERED] = LRUCache(maxsize=RENDERED_MAX_BYTES, getsizeof=lambda o: max(1, o.size_bytes))
    app[GROUP_SEGMENTS] = GroupSegments()
    app[SESSIONS] = MemorySessionStore(settings.sessions_max, settings.session_ttl_s)
    app[POPULATION] = MemoryPopulationStore()
    app[BEACON_LIMITER] = RateLimiter(settings.beacon_rate_per_s, settings.beacon_burst)
    if settings.ip_rate_per_s > 0:
        app[IP_LIMITER] = RateLimiter(settings.ip_rate_per_s, settings.ip_burst)
    app.cleanup_ctx.append(storage_ctx)
    app.on_startup.append(check_player_libs)
    if settings.redis_url:
        app.cleanup_ctx.append(redis_ctx)
    if settings.pathways:
        app.cleanup_ctx.append(content_steering_ctx)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/", handle_root)
    app.router.add_get("/player/", handle_player_page)
    app.router.add_get("/player/lib/{name}", handle_player_lib)
    app.router.add_get("/player/{name}", handle_player_page)
    app.router.add_get("/v1/tracks", handle_tracks)
    app.router.add_get(AUTH_CHECK_PATH, handle_auth_check)
    app.router.add_post("/v1/beacons", handle_beacons)
    app.router.add_get("/v1/sessions", handle_sessions)
    # Any printable sid (braces and slashes too: the default pattern refuses them).
    app.router.add_get("/v1/sessions/{sid:.+}", handle_session)
    app.router.add_get("/v1/ladder/recommendation", handle_ladder_recommendation)
    app.router.add_get("/v1/steering/{track}", handle_steering)
    app.router.add_get("/v1/pathways", handle_pathways)
    add_licence_routes(app)  # /v1/licence/clearkey, /v1/keys/<id>, and under /t/<token>
    add_prefetch(app)  # POST /v1/sessions/{sid}/queue, and the prefetcher's tasks
    add_live(app)  # GET /v1/time, and the live tracks' watches
    # [\s\S], not ".": a path with an encoded newline is still ours to refuse (400, 403).
    app.router.add_route("*", r"/{path:[\s\S]*}", _dispatch)
    return app


async def _name_server(_request: web.Request, response: web.StreamResponse) -> None:
    """``Server: cadenza``, never aiohttp's and Python's versions (the fast
    transport sends the same)."""
    response.headers["Server"] = SERVER_NAME


async def _dispatch(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise _MethodNotAllowedError(request.method)
    return await handle_file(request)


class _MethodNotAllowedError(BadRequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} is not allowed; use GET or HEAD")
