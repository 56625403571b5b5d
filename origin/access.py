"""Access control: signed media URLs (``cadenza.origin.auth``), the admin
bearer token, the per-address rate of the JSON API, and ``GET /v1/auth`` for
CDN edges."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cadenza.origin.auth import ADMIN_PREFIXES, TOKEN_PREFIX, check_bearer, split_token_path, verify
from cadenza.origin.errors import (
    AccessDeniedError,
    BadRequestError,
    RateLimitedError,
    TokenMissingError,
)
from cadenza.origin.keys import IP_LIMITER, METRICS, SETTINGS, SIGNING_KEYS
from cadenza.origin.paths import safe_key

IP_LIMITED_ROUTES: Final = frozenset({"beacons", "sessions", "ladder", "tracks"})


def check_ip_rate(request: web.Request) -> None:
    """``ip_rate_per_s``: the JSON API (beacons, sessions, ladder) per client address.

    The address is ``request.remote``: the TCP peer, or behind ``trusted_proxies``
    the client they forwarded (:mod:`cadenza.origin.proxies`); behind a proxy
    not in that list every viewer would share the proxy's budget, so the limit
    is off by default.  Media requests are never limited here."""
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


AUTH_CHECK_PATH: Final = "/v1/auth"
# Paths the catch-all does not serve: never media, so never signed.  Admin
# endpoints check their bearer token on the request itself.
OPEN_PATHS: Final = frozenset({"/", "/healthz", "/readyz", "/metrics"})
OPEN_PREFIXES: Final = ("/player/", "/v1/")
# Key delivery under a signed URL (/t/<token>/v1/licence/..., /t/<token>/v1/keys/...): the
# origin checks the token against the track's key ids itself (origin/licences.py).
KEY_DELIVERY_PREFIXES: Final = ("/v1/licence/", "/v1/keys/")
# How long an edge may reuse a verdict of /v1/auth (an allow: never past the
# token's expiry).
AUTH_ALLOW_TTL_S: Final = 60
AUTH_DENY_TTL_S: Final = 10
_NOT_CANONICAL: Final = ("%", "\\", "#", "//")
_NO_STORE: Final = {"Cache-Control": "no-store"}


def check_admin(request: web.Request) -> None:
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


@dataclass(frozen=True, slots=True)
class MediaTarget:
    """What a media request's path names, its signed-URL token parsed once."""

    key: str  # the storage key
    token: str | None  # the signed-URL token of the path (None: not a signed URL)
    expires_s: int | None  # the token's expiry, when signing is on


def media_key(request: web.Request, raw_path: str) -> MediaTarget:
    """The storage key a media request names, its token and the token's expiry.

    With ``signing_keys`` set, the path must be ``/t/<token>/<key>`` with a token
    that grants ``/<key>`` now (403 otherwise); without, a ``/t/<token>`` prefix
    is dropped unchecked, so signed URLs can be handed out before enforcing them."""
    keys = request.app[SIGNING_KEYS]
    token, rest = split_token_path(raw_path, strict=bool(keys))
    if not keys:
        return MediaTarget(safe_key(rest), token, None)
    if token is None:
        raise TokenMissingError(f"a signed URL ({TOKEN_PREFIX}<token>/...) is required")
    key = safe_key(rest)
    return MediaTarget(key, token, verify(keys, "/" + key, token, time.time()))


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
                if split_token_path(path, strict=True)[1].startswith(KEY_DELIVERY_PREFIXES):
                    return web.json_response({"status": "allowed"}, headers=_NO_STORE)
                expires_s = media_key(request, path).expires_s
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
