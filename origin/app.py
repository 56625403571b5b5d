"""The origin application: ``create_app(settings)``.

Routes: ``/healthz`` (liveness), ``/readyz`` (storage reachable), ``/metrics``
(Prometheus), and every file below a track folder (``/<track_id>/...``).
Manifests accept rendition filters (``?codec=``, ``?min_bitrate=``,
``?max_bitrate=``); any other query argument, CMCD included, never changes
the bytes served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from cachetools import LRUCache

from cadenza.abr.policy import Guidance
from cadenza.manifests.dash import render_mpd
from cadenza.manifests.errors import InvalidPresentationError
from cadenza.manifests.errors import NoMatchingRenditionsError as NoRenditionsInModel
from cadenza.manifests.filters import InvalidFilterError, RenditionFilter, parse_filter_query
from cadenza.manifests.hls import render_master
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.media_types import cache_control_for, content_type_for
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PRESENTATION_NAME, Presentation
from cadenza.manifests.steering import SteeringConfig
from cadenza.origin.auth import (
    ADMIN_PREFIXES,
    TOKEN_PREFIX,
    check_bearer,
    redact_path,
    split_token_path,
    verify,
)
from cadenza.origin.cache import CachedObject, HotCache, build_cached
from cadenza.origin.content_steering import (
    content_steering_ctx,
    handle_pathways,
    handle_steering,
    steering_for,
)
from cadenza.origin.errors import (
    AccessDeniedError,
    AdminTokenInvalidError,
    AdminTokenMissingError,
    BadRequestError,
    NoMatchingRenditionsError,
    ObjectNotFoundError,
    OriginError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    RateLimitedError,
    StorageUnavailableError,
    TokenMissingError,
)
from cadenza.origin.keys import (
    BEACON_LIMITER,
    CACHE,
    IP_LIMITER,
    METRICS,
    POPULATION,
    PRESENTATIONS,
    RENDERED,
    SESSION_LOCKS,
    SESSIONS,
    SETTINGS,
    SIGNING_KEYS,
    STORAGE,
    STORE_HEALTH,
)
from cadenza.origin.metrics import Metrics, create_metrics
from cadenza.origin.paths import safe_key
from cadenza.origin.ranges import ByteSpan, parse_range
from cadenza.origin.redis_store import (
    FallbackPopulationStore,
    FallbackSessionStore,
    RedisBackend,
    StoreHealth,
)
from cadenza.origin.sessions import (
    MemoryPopulationStore,
    MemorySessionStore,
    RateLimiter,
    SessionLocks,
)
from cadenza.origin.settings import Settings
from cadenza.origin.steering import (
    cmsd_dynamic,
    cmsd_static,
    segment_duration_ms,
    steer_presentation,
)
from cadenza.origin.storage import LocalStorage, ObjectInfo, S3Storage, Storage, StoredObject
from cadenza.origin.telemetry import (
    Observed,
    guidance_for,
    handle_beacons,
    handle_ladder_recommendation,
    handle_session,
    handle_sessions,
    observe_request,
)

log = logging.getLogger("cadenza.origin")

FILTER_KEYS: Final = frozenset({"codec", "min_bitrate", "max_bitrate"})
CMCD_HEADERS: Final = "CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session"
EXPOSED_HEADERS: Final = "Content-Length, Content-Range, CMSD-Static, CMSD-Dynamic"


def _route_class(request: web.Request) -> str:
    path = request.path
    if path in ("/healthz", "/readyz", "/metrics"):
        return path[1:]
    if path.startswith(("/player", "/v1/")) or path == "/":
        return "app"
    if path.endswith((".m3u8", ".mpd")):
        return "manifest"
    if path.endswith((".m4s", ".mp4")):
        return "segment"
    return "other"


def _json_error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": code, "detail": detail}).encode(),
        content_type="application/json",
        headers=headers,
    )


IP_LIMITED_ROUTES: Final = frozenset({"beacons", "sessions", "ladder", "tracks"})


def _check_ip_rate(request: web.Request) -> None:
    """``ip_rate_per_s``: the JSON API (beacons, sessions, ladder) per client address.

    The address is the TCP peer: behind a CDN or proxy that is the proxy, so the
    limit is off by default; media requests are never limited here."""
    limiter = request.app.get(IP_LIMITER)
    if limiter is None or not request.path.startswith("/v1/") or request.path == AUTH_CHECK_PATH:
        return
    if limiter.allow(request.remote or "", time.monotonic()):
        return
    route = request.path.split("/", 3)[2]
    request.app[METRICS].ip_rate_limited.labels(
        route if route in IP_LIMITED_ROUTES else "other"
    ).inc()
    raise RateLimitedError(
        f"over the per-address limit of {limiter.rate_per_s:g} requests/s "
        f"(burst {limiter.burst:g})",
        retry_after_s=max(1, math.ceil(1 / limiter.rate_per_s)),
    )


# -- access control (origin/auth.py) ---------------------------------------

AUTH_CHECK_PATH: Final = "/v1/auth"
# Paths the catch-all does not serve: never media, so never signed.  Admin
# endpoints check their bearer token on the request itself.
OPEN_PATHS: Final = frozenset({"/", "/healthz", "/readyz", "/metrics"})
OPEN_PREFIXES: Final = ("/player/", "/v1/")
# How long an edge may reuse a verdict of /v1/auth (an allow: never past the
# token's expiry).
AUTH_ALLOW_TTL_S: Final = 60
AUTH_DENY_TTL_S: Final = 10
_NOT_CANONICAL: Final = ("%", "\\", "#", "//")


def _check_admin(request: web.Request) -> None:
    """``admin_token``: the operators' JSON API needs ``Authorization: Bearer``.

    Decided by the route that will answer (its pattern), not by the path's
    spelling, so no spelling of a path reaches an admin handler unchecked."""
    expected = request.app[SETTINGS].admin_token
    if expected is None:
        return
    resource = request.match_info.route.resource
    pattern = resource.canonical if resource is not None else request.path
    if pattern.startswith(ADMIN_PREFIXES):
        check_bearer(request.headers.get("Authorization"), expected)


def _media_key(request: web.Request, raw_path: str) -> tuple[str, int | None]:
    """The storage key a media request names, and its token's expiry.

    With ``signing_keys`` set, the path must be ``/t/<token>/<key>`` with a token
    that grants ``/<key>`` now (403 otherwise); without, a ``/t/<token>`` prefix
    is dropped unchecked, so signed URLs can be handed out before enforcing them."""
    keys = request.app[SIGNING_KEYS]
    token, rest = split_token_path(raw_path, strict=bool(keys))
    if not keys:
        return safe_key(rest), None
    if token is None:
        raise TokenMissingError(f"a signed URL ({TOKEN_PREFIX}<token>/...) is required")
    key = safe_key(rest)
    return key, verify(keys, "/" + key, token, time.time())


def _canonical(path: str) -> bool:
    """True when an nginx edge's normalised ``$uri`` is this raw path unchanged: no
    percent-encoding, backslash, fragment, empty or dot segment.  The edge caches
    and routes by ``$uri``, so a verdict on any other form could be about another
    object than the one it serves."""
    if not path.startswith("/") or any(bad in path for bad in _NOT_CANONICAL):
        return False
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path):
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


async def handle_auth_check(request: web.Request) -> web.Response:
    """``GET /v1/auth`` for a CDN edge (nginx ``auth_request``): may the request in
    ``X-Original-URI`` be served?  200, or 403 with the reason in the JSON body and
    in ``X-Cadenza-Auth-Error``; ``Cache-Control`` says how long the edge may keep
    the verdict."""
    original = request.headers.get("X-Original-URI")
    if original is None:
        raise BadRequestError("X-Original-URI is required: the path to check")
    path = original.split("?", 1)[0]
    allow_s = AUTH_ALLOW_TTL_S
    try:
        if request.app[SIGNING_KEYS]:
            if not _canonical(path):
                raise AccessDeniedError("the path is not in canonical form")
            if path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                _key, expires_s = _media_key(request, path)
                if expires_s is not None:
                    allow_s = min(allow_s, math.floor(expires_s - time.time()))
    except (AccessDeniedError, BadRequestError) as exc:
        code = exc.code if isinstance(exc, AccessDeniedError) else "bad_path"
        request.app[METRICS].access_denied.labels(code).inc()
        return web.json_response(
            {"error": code, "detail": exc.detail},
            status=403,
            headers={
                "Cache-Control": f"max-age={AUTH_DENY_TTL_S}",
                "X-Cadenza-Auth-Error": code,
            },
        )
    control = f"max-age={allow_s}" if allow_s > 0 else "no-store"
    return web.json_response({"status": "allowed"}, headers={"Cache-Control": control})


@web.middleware
async def edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """CORS on every answer, typed errors to JSON, metrics per route class."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    started = time.perf_counter()
    route = _route_class(request)
    cors = {
        "Access-Control-Allow-Origin": settings.cors_allow_origin,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
    }
    if settings.cors_allow_origin != "*":
        cors["Vary"] = "Origin"
    response: web.StreamResponse
    if request.method == "OPTIONS":
        response = web.Response(
            status=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
                "Access-Control-Allow-Headers": (
                    f"Range, If-None-Match, If-Modified-Since, Content-Type, Authorization, "
                    f"{CMCD_HEADERS}"
                ),
                "Access-Control-Max-Age": "86400",
            },
        )
    else:
        try:
            _check_ip_rate(request)
            _check_admin(request)
            response = await handler(request)
        except RangeNotSatisfiableError as exc:
            response = _json_error(
                exc.status, exc.code, exc.detail, {"Content-Range": f"bytes */{exc.size_bytes}"}
            )
        except StorageUnavailableError as exc:
            metrics.storage_errors.labels(exc.backend, exc.kind).inc()
            response = _json_error(
                exc.status, exc.code, exc.detail, {"Retry-After": str(settings.retry_after_s)}
            )
        except RateLimitedError as exc:
            response = _json_error(
                exc.status, exc.code, exc.detail, {"Retry-After": str(exc.retry_after_s)}
            )
        except AdminTokenMissingError as exc:
            metrics.access_denied.labels(exc.code).inc()
            response = _json_error(
                exc.status, exc.code, exc.detail, {"WWW-Authenticate": 'Bearer realm="cadenza"'}
            )
        except (AccessDeniedError, AdminTokenInvalidError) as exc:
            metrics.access_denied.labels(exc.code).inc()
            response = _json_error(exc.status, exc.code, exc.detail)
        except OriginError as exc:
            response = _json_error(exc.status, exc.code, exc.detail)
        except web.HTTPException as exc:
            response = _json_error(exc.status, "http", exc.reason)
        except Exception:  # a bug: log it, never leak a traceback to the client
            log.exception("unhandled error serving %s", redact_path(request.path))
            response = _json_error(500, "internal", "internal error; see the origin's log")
        for name, value in cors.items():
            if name == "Vary" and "Vary" in response.headers:
                response.headers["Vary"] = response.headers["Vary"] + ", Origin"
            else:
                response.headers.setdefault(name, value)
    metrics.request_done(
        route,
        response.status,
        response.headers.get("X-Cadenza-Cache", "none"),
        response.content_length if request.method != "HEAD" else None,
        time.perf_counter() - started,
    )
    return response


# -- conditional requests, ranges, compression ----------------------------


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as RFC 9110 13.1.2 requires for If-None-Match."""
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == bare for candidate in header.split(","))


def _etag_matches_strongly(header: str, etag: str) -> bool:
    """Strong comparison, as RFC 9110 13.1.1 requires for If-Match: a weak ETag
    never matches; ``*`` matches any current representation."""
    if header.strip() == "*":
        return True
    return not etag.startswith("W/") and any(c.strip() == etag for c in header.split(","))


def _http_date_s(header: str) -> float | None:
    """An HTTP-date's seconds, or None for a value that is not one (such a
    field is ignored, RFC 9110 13.1.3 and 13.1.4)."""
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _not_modified_since(header: str, mtime_s: float) -> bool:
    since_s = _http_date_s(header)
    return since_s is not None and int(mtime_s) <= since_s


def check_preconditions(
    if_match: str | None, if_unmodified_since: str | None, etag: str, mtime_s: float
) -> None:
    """Raise :class:`PreconditionFailedError` (412) when ``If-Match`` does not
    match, or, without ``If-Match``, the object was modified after
    ``If-Unmodified-Since`` (RFC 9110 13.2.2, steps 1 and 2)."""
    if if_match is not None:
        if not _etag_matches_strongly(if_match, etag):
            raise PreconditionFailedError(f"If-Match: {if_match[:200]!r} does not match {etag}")
        return
    if if_unmodified_since is not None:
        since_s = _http_date_s(if_unmodified_since)
        if since_s is not None and int(mtime_s) > since_s:
            raise PreconditionFailedError(
                f"modified after If-Unmodified-Since: {if_unmodified_since[:64]!r}"
            )


def preconditions_hold(
    if_none_match: str | None, if_modified_since: str | None, etag: str, mtime_s: float
) -> bool:
    """False when a conditional GET is answered ``304`` (RFC 9110 section 13.2.2:
    ``If-None-Match`` wins over ``If-Modified-Since``)."""
    if if_none_match is not None:
        return not _etag_matches(if_none_match, etag)
    return not (if_modified_since and _not_modified_since(if_modified_since, mtime_s))


def _preconditions_hold(request: web.Request, etag: str, mtime_s: float) -> bool:
    headers = request.headers
    check_preconditions(headers.get("If-Match"), headers.get("If-Unmodified-Since"), etag, mtime_s)
    return preconditions_hold(
        headers.get("If-None-Match"), headers.get("If-Modified-Since"), etag, mtime_s
    )


@dataclass(frozen=True, slots=True)
class ObjectAnswer:
    """How a cached object is answered: what :func:`plan_object_answer` decides."""

    status: int  # 200, 206 or 304
    gzip: bool  # the gzip copy is sent (a manifest, accepted, no Range)
    etag: str  # of the representation sent
    span: ByteSpan | None  # 206 only


def plan_object_answer(
    obj: CachedObject,
    *,
    accepts_gzip: bool,
    range_header: str | None,
    if_range: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_match: str | None = None,
    if_unmodified_since: str | None = None,
) -> ObjectAnswer:
    """The semantics of a static file server, decided once for both the aiohttp
    path and origin.fastpath: gzip for a manifest that accepts it (never with a
    Range), ``304`` when the validators match (RFC 9110 13.2.2), else ``206`` for
    one satisfiable range that ``If-Range`` permits (RFC 9110 14.2, 13.1.5), else
    ``200``.  Raises :class:`PreconditionFailedError` (412, checked first) and
    :class:`RangeNotSatisfiableError` (416)."""
    gzip = obj.gzip_body is not None and accepts_gzip and range_header is None
    etag = obj.gzip_etag if gzip and obj.gzip_etag else obj.etag
    check_preconditions(if_match, if_unmodified_since, etag, obj.mtime_s)
    if not preconditions_hold(if_none_match, if_modified_since, etag, obj.mtime_s):
        return ObjectAnswer(304, gzip, etag, None)
    if not gzip and (if_range is None or if_range.strip() == obj.etag):
        span = parse_range(range_header, len(obj.body))
        if span is not None:
            return ObjectAnswer(206, gzip, etag, span)
    return ObjectAnswer(200, gzip, etag, None)


def respond_with_object(request: web.Request, obj: CachedObject, cache_result: str) -> web.Response:
    """Serve bytes from memory with the semantics of a static file server."""
    asked = request.headers
    answer = plan_object_answer(
        obj,
        accepts_gzip="gzip" in asked.get("Accept-Encoding", "").lower(),
        range_header=asked.get("Range"),
        if_range=asked.get("If-Range"),
        if_none_match=asked.get("If-None-Match"),
        if_modified_since=asked.get("If-Modified-Since"),
        if_match=asked.get("If-Match"),
        if_unmodified_since=asked.get("If-Unmodified-Since"),
    )
    headers = {
        "Content-Type": obj.content_type,
        "Cache-Control": obj.cache_control,
        "ETag": answer.etag,
        "Last-Modified": obj.last_modified,
        "Accept-Ranges": "bytes",
        "X-Cadenza-Cache": cache_result,
    }
    if obj.manifest:
        headers["Vary"] = "Accept-Encoding"
    if answer.status == 304:
        return web.Response(status=304, headers=headers)
    body = obj.body
    if answer.gzip and obj.gzip_body is not None:
        headers["Content-Encoding"] = "gzip"
        body = obj.gzip_body
    span = answer.span
    if span is not None:
        headers["Content-Range"] = f"bytes {span.start}-{span.end}/{len(obj.body)}"
        body = obj.body[span.start : span.end + 1]
    # aiohttp sends the headers (Content-Length included) but no body for HEAD.
    return web.Response(status=answer.status, body=body, headers=headers)


# -- handlers --------------------------------------------------------------


async def load_object(app: web.Application, key: str) -> tuple[CachedObject, str]:
    """The object at ``key`` through the hot cache, and how it was found (``hit``,
    ``miss``, ``collapsed``, ``stale``); counted in the metrics.  Raises the
    storage's errors, and :class:`ObjectTooLargeError` for an object above the
    cache limit (to be streamed instead)."""
    settings = app[SETTINGS]
    storage = app[STORAGE]

    async def load() -> CachedObject:
        info = await storage.head(key)
        if info.size_bytes > settings.cache_max_object_bytes:
            raise ObjectTooLargeError(info.size_bytes)
        stored = await storage.read(key)
        control = cache_control_for(
            key,
            manifest_max_age_s=settings.manifest_max_age_s,
            segment_max_age_s=settings.segment_max_age_s,
        )
        return build_cached(key, stored, control)

    obj, how = await app[CACHE].get(key, load)
    metrics = app[METRICS]
    metrics.cache_lookup(how)
    if how != "hit":  # a hit changes nothing the gauge shows
        metrics.cache_bytes.set(app[CACHE].size_bytes)
    return obj, how


class ObjectTooLargeError(Exception):
    def __init__(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        super().__init__(size_bytes)


# Rendered manifests kept (their identity and gzip bodies), in bytes of both.
RENDERED_MAX_BYTES: Final = 16 * 1024 * 1024
LARGE_CHUNK_BYTES: Final = 256 * 1024


class _FileSpanResponse(web.StreamResponse):
    """Bytes ``start`` to ``start + length - 1`` of an open local file, read a chunk
    at a time as the client takes them, so a large object is never whole in memory.

    Like ``web.FileResponse`` it sends itself when aiohttp prepares it, after the
    edge middleware added its headers; unlike it, the range was decided by
    :func:`parse_range`, so large and cached objects answer a Range alike.  It
    owns ``handle`` and closes it once sent."""

    def __init__(
        self, handle: BinaryIO, start: int, length: int, *, status: int, headers: dict[str, str]
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._handle = handle
        self._span_start = start
        self._span_length = length
        self.content_length = length

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        handle = self._handle
        try:
            writer = await super().prepare(request)
            await asyncio.to_thread(handle.seek, self._span_start)
            remaining = self._span_length
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(LARGE_CHUNK_BYTES, remaining))
                if not chunk:  # the file shrank since its size was sent: drop the connection
                    raise ConnectionResetError(f"{handle.name} shrank while being sent")
                await self.write(chunk)
                remaining -= len(chunk)
        finally:
            handle.close()
        await self.write_eof()
        return writer


async def _serve_large(request: web.Request, key: str) -> web.StreamResponse:
    """Objects above the cache limit: local files streamed in chunks, S3 by ranged
    reads; validators, conditional requests and ranges as for cached objects."""
    storage = request.app[STORAGE]
    settings = request.app[SETTINGS]
    control = cache_control_for(
        key,
        manifest_max_age_s=settings.manifest_max_age_s,
        segment_max_age_s=settings.segment_max_age_s,
    )
    handle: BinaryIO | None = None
    if isinstance(storage, LocalStorage) and request.method != "HEAD":
        handle, info = await storage.open(key)
    else:
        info = await storage.head(key)
    try:
        etag = f'"{info.etag_hint}"'
        headers = {
            "Content-Type": content_type_for(key),
            "Cache-Control": control,
            "ETag": etag,
            "Last-Modified": info.last_modified,
            "Accept-Ranges": "bytes",
            "X-Cadenza-Cache": "bypass",
        }
        if not _preconditions_hold(request, etag, info.mtime_s):
            return web.Response(status=304, headers=headers)
        if_range = request.headers.get("If-Range")
        span = None
        if if_range is None or if_range.strip() == etag:
            span = parse_range(request.headers.get("Range"), info.size_bytes)
        start, end = (span.start, span.end) if span else (0, info.size_bytes - 1)
        status = 206 if span else 200
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size_bytes}"
        if request.method == "HEAD":
            head = web.Response(status=status, headers=headers)
            head.headers["Content-Length"] = str(end - start + 1)
            return head
        if handle is not None:
            length = end - start + 1
            response = _FileSpanResponse(handle, start, length, status=status, headers=headers)
            handle = None  # the response closes it once sent
            return response
        body = await storage.read_range(key, start, end)
        return web.Response(status=status, body=body, headers=headers)
    finally:
        if handle is not None:
            handle.close()


async def presentation_of(app: web.Application, track: str) -> tuple[Presentation, CachedObject]:
    """The track's model, parsed once per version of its presentation.json."""
    obj, _ = await load_object(app, f"{track}/{PRESENTATION_NAME}")
    parsed = app[PRESENTATIONS].get(track)
    if parsed is not None and parsed[0] == obj.etag:
        return parsed[1], obj
    try:
        presentation = presentation_from_json(obj.body)
    except InvalidPresentationError as exc:
        raise StorageUnavailableError(f"{track}: damaged presentation.json: {exc}", "data") from exc
    app[PRESENTATIONS][track] = (obj.etag, presentation)
    return presentation, obj


def _selection(query: Mapping[str, str]) -> RenditionFilter:
    try:
        return parse_filter_query(query)
    except InvalidFilterError as exc:
        raise BadRequestError(str(exc)) from exc


def filter_values(query: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The rendition-filter arguments of a query, in key order (one reading of
    each: the shape a rendered manifest is cached under is also its filter)."""
    return tuple((k, query[k]) for k in sorted(FILTER_KEYS & query.keys()))


@dataclass(frozen=True, slots=True)
class RenderedManifest:
    """A master playlist or MPD rendered for one request (:func:`render_manifest`)."""

    obj: CachedObject
    how: str  # the X-Cadenza-Cache value: "rendered" or "steered"
    vary_session: bool  # the session came from the CMCD-Session header


async def render_manifest(
    app: web.Application,
    key: str,
    selected: tuple[tuple[str, str], ...],
    observed: Observed | None,
    steering: SteeringConfig | None,
    *,
    personal_pathways: bool,
    model: tuple[Presentation, CachedObject] | None = None,
) -> RenderedManifest:
    """A manifest rendered from the model: filtered by ``selected`` (see
    :func:`filter_values`), and steered for the session when one is known
    (``sid`` or CMCD ``sid``).  ``personal_pathways``: the steering block is
    this viewer's (signed, or named after the Host header); ``model``: the
    track's :func:`presentation_of`, when the caller has it already.  No
    request object: origin.fastpath renders with it too."""
    track, _, name = key.partition("/")
    presentation, source = model or await presentation_of(app, track)
    # The selection and the guidance's start and cap decide which renditions
    # are listed, in which order.
    shaped = presentation
    if selected:
        try:
            shaped = _selection(dict(selected)).apply(presentation)
        except NoRenditionsInModel as exc:
            raise NoMatchingRenditionsError(str(exc)) from exc
    settings = app[SETTINGS]
    control = f"public, max-age={settings.manifest_max_age_s}"
    how = "rendered"
    vary_session = False
    guidance: Guidance | None = None
    if observed is not None and settings.steering:
        guidance = await guidance_for(app, shaped, observed.state, observed.network_key)
        app[METRICS].steered(guidance.source.value)
        control = f"private, max-age={settings.manifest_max_age_s}"
        how = "steered"
        vary_session = observed.sid_from_header
    if steering is not None and personal_pathways:
        # Its pathway URIs carry this viewer's token, or its steering server
        # was named after the request's Host header: either way not for a
        # shared cache, which keys on the path and would hand a forged Host
        # to every later viewer.
        control = f"private, max-age={settings.manifest_max_age_s}"
    # The bytes depend only on these: steer, render, hash and gzip once per shape.
    steer = None if guidance is None else (guidance.start_bitrate_bps, guidance.max_bitrate_bps)
    shape = (key, source.etag, selected, steer, steering, control)
    rendered = app[RENDERED].get(shape)
    if rendered is None:
        if guidance is not None:
            shaped = steer_presentation(shaped, guidance)
        text = (
            render_master(shaped, steering) if name == MASTER_NAME else render_mpd(shaped, steering)
        )
        body = text.encode("utf-8")
        info = ObjectInfo(len(body), source.mtime_s, "")
        rendered = build_cached(key, StoredObject(info, body), control)
        app[RENDERED][shape] = rendered
    return RenderedManifest(rendered, how, vary_session)


async def _rendered_manifest(
    request: web.Request, key: str, observed: Observed | None
) -> web.Response:
    track, _, name = key.partition("/")
    steering = steering_for(request, track, "hls" if name == MASTER_NAME else "dash")
    personal = steering is not None and bool(
        split_token_path(request.raw_path, strict=False)[0]
        or not request.app[SETTINGS].content_steering_url
    )
    rendered = await render_manifest(
        request.app,
        key,
        filter_values(request.query),
        observed,
        steering,
        personal_pathways=personal,
    )
    response = respond_with_object(request, rendered.obj, rendered.how)
    if rendered.vary_session:
        response.headers["Vary"] = "Accept-Encoding, CMCD-Session"
    return response


def steered_segment(key: str) -> bool:
    """A media segment of a rendition (``<track>/<rendition>/<name>.m4s``): the
    requests that get CMSD when their session is known."""
    return key.count("/") == 2 and key.endswith(".m4s")


async def cmsd_for(
    app: web.Application,
    key: str,
    observed: Observed,
    model: tuple[Presentation, CachedObject] | None = None,
) -> tuple[str, str] | None:
    """The CMSD-Static and CMSD-Dynamic values for a media segment of a known
    session (CTA-5006); None when the rendition is not in the model.
    ``model``: as for :func:`render_manifest`."""
    track, rendition_id, name = key.split("/", 2)
    presentation, _ = model or await presentation_of(app, track)
    try:
        rendition = presentation.rendition(rendition_id)
    except KeyError:
        return None
    guidance = await guidance_for(app, presentation, observed.state, observed.network_key)
    return (
        cmsd_static(rendition, segment_duration_ms(rendition, name)),
        cmsd_dynamic(guidance.estimate_bps, guidance.max_bitrate_bps),
    )


def private_control(control: str) -> str:
    """Personalised (CMSD): shared caches must not hand this session's answer to others."""
    return control.replace("public", "private")


async def _add_cmsd(
    request: web.Request, response: web.StreamResponse, key: str, observed: Observed
) -> None:
    values = await cmsd_for(request.app, key, observed)
    if values is None:
        return
    response.headers["CMSD-Static"], response.headers["CMSD-Dynamic"] = values
    response.headers["Cache-Control"] = private_control(response.headers.get("Cache-Control", ""))


async def handle_file(request: web.Request) -> web.StreamResponse:
    key, _expires_s = _media_key(request, request.raw_path.split("?", 1)[0])
    if "/" not in key:
        raise ObjectNotFoundError("only files inside a track folder are served")
    track = key.split("/", 1)[0]
    observed = await observe_request(request, track)
    name = key.rsplit("/", 1)[-1]
    steered = observed is not None and request.app[SETTINGS].steering
    is_manifest = name in (MASTER_NAME, MPD_NAME) and key.count("/") == 1
    # With content steering the manifests name the pathways: always rendered.
    pathways = bool(request.app[SETTINGS].pathways)
    if is_manifest and (steered or pathways or FILTER_KEYS & request.query.keys()):
        return await _rendered_manifest(request, key, observed)
    try:
        obj, how = await load_object(request.app, key)
    except ObjectTooLargeError:
        return await _serve_large(request, key)
    response = respond_with_object(request, obj, how)
    if (
        observed is not None
        and request.app[SETTINGS].steering
        and steered_segment(key)
        and response.status in (200, 206)
    ):
        await _add_cmsd(request, response, key, observed)
    return response


STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
# The demo page's player libraries, served from the npm folder (never from the internet).
PLAYER_LIBS: Final = {
    "hls.min.js": "hls.js/dist/hls.min.js",
    "dash.all.min.js": "dashjs/dist/modern/umd/dash.all.min.js",
    "shaka-player.compiled.js": "shaka-player/dist/shaka-player.compiled.js",
}


async def handle_root(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/player/"})


async def handle_player_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "player.html"
    if name not in ("player.html", "player.js"):
        raise ObjectNotFoundError(f"no such player file {name}")
    return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


async def handle_player_lib(request: web.Request) -> web.StreamResponse:
    relative = PLAYER_LIBS.get(request.match_info["name"])
    if relative is None:
        raise ObjectNotFoundError("unknown player library")
    path = Path(request.app[SETTINGS].player_assets_dir) / relative
    if not path.is_file():
        # The path goes to the log only: an answer never names the server's files.
        log.warning("player library %s is missing: run `npm ci` (make demo does)", path)
        raise ObjectNotFoundError(
            f"player library {request.match_info['name']} is not installed on this origin"
        )
    return web.FileResponse(
        path,
        headers={
            "Cache-Control": "public, max-age=3600",
            "Content-Type": "text/javascript; charset=utf-8",
        },
    )


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


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sessions and population priors in Redis, shared by every replica, in front
    of the memory stores, which serve alone while Redis is unreachable."""
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    backend = RedisBackend(settings.redis_url, timeout_s=settings.redis_timeout_s)
    health = StoreHealth(backend.ping, retry_s=settings.redis_retry_s, metrics=app[METRICS])
    app[STORE_HEALTH] = health
    # Redis awaits between reading a session and writing it back.
    app[SESSION_LOCKS] = SessionLocks()
    app[SESSIONS] = FallbackSessionStore(
        backend.sessions(max_sessions=settings.sessions_max, ttl_s=settings.session_ttl_s),
        app[SESSIONS],
        health,
    )
    app[POPULATION] = FallbackPopulationStore(backend.population(), app[POPULATION], health)
    await health.check()  # a dead Redis is logged now, but does not stop the origin
    try:
        yield
    finally:
        await backend.close()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    storage: Storage
    if settings.is_s3:
        s3 = S3Storage(
            settings.root,
            endpoint_url=settings.s3_endpoint_url,
            timeout_s=settings.storage_timeout_s,
        )
        await s3.open()
        storage = s3
    else:
        storage = LocalStorage(Path(settings.root))
    app[STORAGE] = storage
    try:
        yield
    finally:
        await storage.close()


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(middlewares=[edge_middleware], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[SIGNING_KEYS] = tuple(key.encode("utf-8") for key in settings.signing_keys)
    app[METRICS] = metrics or create_metrics(shared_sessions=settings.redis_url is not None)
    app[CACHE] = HotCache(
        settings.cache_max_bytes, settings.cache_max_object_bytes, settings.manifest_max_age_s
    )
    app[PRESENTATIONS] = {}
    app[RENDERED] = LRUCache(maxsize=RENDERED_MAX_BYTES, getsizeof=lambda o: max(1, o.size_bytes))
    app[SESSIONS] = MemorySessionStore(settings.sessions_max, settings.session_ttl_s)
    app[POPULATION] = MemoryPopulationStore()
    app[BEACON_LIMITER] = RateLimiter(settings.beacon_rate_per_s, settings.beacon_burst)
    if settings.ip_rate_per_s > 0:
        app[IP_LIMITER] = RateLimiter(settings.ip_rate_per_s, settings.ip_burst)
    app.cleanup_ctx.append(_storage_ctx)
    if settings.redis_url:
        app.cleanup_ctx.append(_redis_ctx)
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
    # [\s\S], not ".": a path with an encoded newline is still ours to refuse (400, 403).
    app.router.add_route("*", r"/{path:[\s\S]*}", _dispatch)
    return app


async def _dispatch(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise _MethodNotAllowedError(request.method)
    return await handle_file(request)


class _MethodNotAllowedError(BadRequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} is not allowed; use GET or HEAD")
