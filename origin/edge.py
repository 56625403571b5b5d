"""The edge of every aiohttp answer: CORS, the HTTP version, the access
checks, typed errors mapped to JSON responses through one table keyed by
exception class, and the request metrics per route class."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from aiohttp import web
from aiohttp.http import HttpVersion11

from cadenza.manifests.errors import NotSwitchableError
from cadenza.origin.access import check_admin, check_ip_rate
from cadenza.origin.auth import redact_path
from cadenza.origin.core.heads import CMCD_HEADERS, cors_fields
from cadenza.origin.core.request import VersionVerdict, check_version
from cadenza.origin.core.routes import route_class
from cadenza.origin.errors import (
    AccessDeniedError,
    AdminTokenInvalidError,
    AdminTokenMissingError,
    KeyDeliveryError,
    OriginError,
    RangeNotSatisfiableError,
    RateLimitedError,
    StorageUnavailableError,
)
from cadenza.origin.keys import METRICS, SETTINGS

log = logging.getLogger("cadenza.origin")


def transfer_coding_supported(fields: Sequence[str]) -> bool:
    """Whether a request's ``Transfer-Encoding`` (its repeated fields, RFC 9110
    5.3) is absent or exactly ``chunked``, the one coding understood: any other
    is answered 501 and the connection closed (RFC 9112 6.1), so a body framed
    differently by another hop cannot smuggle a request."""
    if not fields:
        return True
    codings = [c.strip().lower() for field in fields for c in field.split(",")]
    return codings == ["chunked"]


def _version_refused(request: web.Request, verdict: VersionVerdict) -> web.Response:
    """400 for an HTTP/0.9-style request line, 505 for another major version
    (RFC 9112 2.3, RFC 9110 15.6.6), sent as HTTP/1.1 (never echoing the
    version asked for), and the connection closed."""
    if verdict is VersionVerdict.BAD_REQUEST:
        response = json_error(400, "bad_request_line", "the request line names no HTTP version")
    else:
        major, minor = request.version
        response = json_error(
            505,
            "http_version_not_supported",
            f"HTTP/{major}.{minor} is not supported; use HTTP/1.1",
        )
    # aiohttp writes the request's version (a cached property) in the status
    # line: the answer is HTTP/1.1's.
    request._cache["version"] = HttpVersion11
    response.force_close()
    return response


def json_error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": code, "detail": detail}).encode(),
        content_type="application/json",
        headers=headers,
    )


ErrorResponder = Callable[[web.Request, Exception], web.Response]


def _range_not_satisfiable(_request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, RangeNotSatisfiableError)
    return _typed(exc, {"Content-Range": f"bytes */{exc.size_bytes}"})


def _storage_unavailable(request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, StorageUnavailableError)
    request.app[METRICS].storage_errors.labels(exc.backend, exc.kind).inc()
    return _typed(exc, {"Retry-After": str(request.app[SETTINGS].retry_after_s)})


def _rate_limited(_request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, RateLimitedError)
    return _typed(exc, {"Retry-After": str(exc.retry_after_s)})


def _admin_token_missing(request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, AdminTokenMissingError)
    request.app[METRICS].access_denied.labels(exc.code).inc()
    return _typed(exc, {"WWW-Authenticate": 'Bearer realm="cadenza"'})


def _access_denied(request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, (AccessDeniedError, AdminTokenInvalidError))
    request.app[METRICS].access_denied.labels(exc.code).inc()
    return _typed(exc)


def _key_delivery(request: web.Request, exc: Exception) -> web.Response:
    """Key delivery's errors (:mod:`cadenza.origin.licences`): never kept by a cache,
    and a refusal counted with the other access-control refusals."""
    assert isinstance(exc, KeyDeliveryError)
    if exc.status == 403:
        request.app[METRICS].access_denied.labels(exc.code).inc()
    return _typed(exc, {"Cache-Control": "no-store, private"})


def _not_switchable(_request: web.Request, exc: Exception) -> web.Response:
    """``?abr=origin`` for a track with nothing to decide: a conflict with the
    track's state (RFC 9110 15.5.10), with the reason and the groups there are."""
    assert isinstance(exc, NotSwitchableError)
    body = {
        "error": "not_switchable",
        "detail": str(exc),
        "track": exc.track_id,
        "reason": exc.reason,
        "groups": list(exc.groups),
    }
    return web.Response(status=409, body=json.dumps(body).encode(), content_type="application/json")


def _origin_error(_request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, OriginError)
    return _typed(exc)


def _http_exception(_request: web.Request, exc: Exception) -> web.Response:
    assert isinstance(exc, web.HTTPException)
    return json_error(exc.status, "http", exc.reason)


def _internal(request: web.Request, _exc: Exception) -> web.Response:
    """A bug: logged, and never a traceback to the client."""
    log.exception("unhandled error serving %s", redact_path(request.path))
    return json_error(500, "internal", "internal error; see the origin's log")


def _typed(exc: OriginError, headers: dict[str, str] | None = None) -> web.Response:
    return json_error(exc.status, exc.code, exc.detail, headers)


# Exceptions to responses: the entry of the nearest class in the exception's
# MRO answers (as Starlette's exception handlers are chosen).
ERROR_RESPONSES: Final[Mapping[type[Exception], ErrorResponder]] = {
    RangeNotSatisfiableError: _range_not_satisfiable,
    StorageUnavailableError: _storage_unavailable,
    RateLimitedError: _rate_limited,
    KeyDeliveryError: _key_delivery,
    AdminTokenMissingError: _admin_token_missing,
    AccessDeniedError: _access_denied,
    AdminTokenInvalidError: _access_denied,
    NotSwitchableError: _not_switchable,
    OriginError: _origin_error,
    web.HTTPException: _http_exception,
    Exception: _internal,
}


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The response for an exception a handler raised (:data:`ERROR_RESPONSES`)."""
    for cls in type(exc).__mro__:
        responder = ERROR_RESPONSES.get(cls)
        if responder is not None:
            return responder(request, exc)
    return _internal(request, exc)


def cors_missing(response: web.StreamResponse) -> bool:
    return "Access-Control-Allow-Origin" not in response.headers


@web.middleware
async def edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """CORS on every answer, typed errors to JSON, metrics per route class."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    started = time.perf_counter()
    route = route_class(request.path).value
    cors = cors_fields(settings)
    response: web.StreamResponse
    verdict = check_version(*request.version)
    if verdict is not VersionVerdict.OK:
        response = _version_refused(request, verdict)
    elif not transfer_coding_supported(request.headers.getall("Transfer-Encoding", ())):
        response = json_error(
            501, "not_implemented", "the only transfer coding understood is chunked"
        )
        response.force_close()  # its body's framing is not known: nothing after it is read
    elif request.method == "OPTIONS":
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
            check_ip_rate(request)
            check_admin(request)
            response = await handler(request)
        except Exception as exc:
            response = error_response(request, exc)
        # An object's answer has its CORS fields already (core.heads.object_fields).
        for name, value in cors.items() if cors_missing(response) else ():
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
