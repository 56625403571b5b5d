"""Key delivery: the W3C ClearKey licence endpoint and the AES-128 key endpoint.

``POST /v1/licence/clearkey`` takes a ClearKey licence request (W3C Encrypted Media
Extensions 9.1.3: ``{"kids": [<base64url key id>...], "type": "temporary"}``) and
answers a JSON Web Key set (9.1.4: ``{"keys": [{"kty": "oct", "kid": ..., "k": ...}],
"type": "temporary"}``).  ``GET /v1/keys/<key id, 32 hex digits>`` answers the 16 raw
bytes of an AES-128 key (RFC 8216 4.4.4.4, ``METHOD=AES-128``).

Access (:func:`grant`): the admin bearer token grants every key; a signed-URL token
(``/t/<token>/v1/...``: the manifests' key URLs are relative, so a token on the
playlist reaches them) grants the keys of the track its scope names, as the track's
``presentation.json`` lists them; a scope of ``/`` grants every key.  Without signing
keys and without an admin token the origin is open, and so is key delivery.
Authentication comes first, so an unauthenticated caller learns nothing of which key
ids exist: 403 whatever it asks.  Then an unknown key id is 404 and a malformed body
400.  Every answer, errors included, is ``Cache-Control: no-store, private``; each
caller address is rate-limited (``licence_rate_per_s``, burst ``ip_burst``); every
issuance is counted (``cadenza_licences_issued_total{kind}``) and logged with the key
ids and never the keys, every refusal counted by reason.

The MPD of an encrypted track names the licence URL (``dashif:Laurl``, DASH-IF IOP
7.6.2.4) absolute, as players take it: :func:`viewer_root_url` builds the origin's root
as the viewer reached it, from the request (``core.answer.choose_object`` renders it).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from aiohttp import web

from cadenza.manifests.encryption import (
    CLEARKEY_LICENCE_PATH,
    KEY_PATH_PREFIX,
    key_id_b64url,
    key_id_from_b64url,
    presentation_key_ids,
)
from cadenza.origin.auth import TOKEN_PREFIX, check_bearer, verify_scope
from cadenza.origin.beacons import read_body
from cadenza.origin.errors import (
    AccessDeniedError,
    AdminTokenInvalidError,
    AdminTokenMissingError,
    BadLicenceRequestError,
    BadRequestError,
    KeyDeliveryOffError,
    KeyNotFoundError,
    LicenceDeniedError,
    ObjectNotFoundError,
    OriginError,
    RateLimitedError,
    TokenMissingError,
)
from cadenza.origin.keys import METRICS, SETTINGS, SIGNING_KEYS
from cadenza.origin.proxies import TrustedProxies
from cadenza.origin.rendering import presentation_of
from cadenza.origin.sessions import RateLimiter
from cadenza.origin.settings import Settings
from cadenza.store.keys import (
    KEK_ENV,
    KEK_FILE_ENV,
    KeyStore,
    KeyStoreError,
    default_key_store_location,
    open_key_store,
    read_kek,
)
from cadenza.store.s3client import S3Settings

log = logging.getLogger("cadenza.origin.licences")

KEY_STORE: Final = web.AppKey("key_store", KeyStore)
TRUSTED_PROXIES: Final = web.AppKey("licence_trusted_proxies", TrustedProxies)
_SCHEMES: Final = frozenset({"http", "https"})
# A Host field (RFC 9110 7.2): a reg-name or IPv4 address, or a bracketed IPv6
# literal, then an optional port; nothing that could leave the URL's authority.
_HOST: Final = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
LICENCE_LIMITER: Final = web.AppKey("licence_limiter", RateLimiter)
NO_STORE: Final = {"Cache-Control": "no-store, private"}
LICENCE_MAX_BYTES: Final = 8 * 1024
MAX_KIDS: Final = 64
KIND_CLEARKEY: Final = "clearkey"
KIND_AES_128: Final = "aes-128"
REFUSAL_REASONS: Final = (
    "token_missing",
    "token_malformed",
    "bad_signature",
    "token_expired",
    "bad_admin_token",
    "unknown_key",
    "bad_licence_request",
    "rate_limited",
    "key_delivery_off",
)


def _kek(settings: Settings) -> bytes | None:
    """The KEK from the settings (the same rules as the packager's environment)."""
    return read_kek(
        {
            KEK_ENV: settings.key_encryption_key or "",
            KEK_FILE_ENV: settings.key_encryption_key_file or "",
        }
    )


async def key_store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the key store (``key_store``, default ``<root>-keys``) when a KEK is set;
    without one, key delivery answers 503 to an authorised caller."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    metrics.preset(metrics.licences_issued, [(KIND_CLEARKEY,), (KIND_AES_128,)])
    metrics.preset(metrics.licences_refused, [(r,) for r in REFUSAL_REASONS])
    app[LICENCE_LIMITER] = RateLimiter(settings.licence_rate_per_s, settings.ip_burst)
    kek = _kek(settings)
    store: KeyStore | None = None
    if kek is not None:
        location = settings.key_store or default_key_store_location(settings.root)
        store = open_key_store(location, kek, S3Settings(endpoint_url=settings.s3_endpoint_url))
        app[KEY_STORE] = store
    try:
        yield
    finally:
        if store is not None:
            await store.close()


def _limit(request: web.Request) -> None:
    limiter = request.app[LICENCE_LIMITER]
    if not limiter.allow(request.remote or "", time.monotonic()):
        raise RateLimitedError(
            f"over the per-address limit of {limiter.rate_per_s:g} licence requests/s",
            retry_after_s=max(1, math.ceil(1 / limiter.rate_per_s)),
        )


def _grant_of_caller(request: web.Request) -> str:
    """The scope the caller holds: ``/`` (every key) or a signed token's scope.
    Raises :class:`LicenceDeniedError` (403, with the failed check as reason)."""
    settings = request.app[SETTINGS]
    keys = request.app[SIGNING_KEYS]
    token = request.match_info.get("token")
    try:
        if settings.admin_token is not None and "Authorization" in request.headers:
            check_bearer(request.headers.get("Authorization"), settings.admin_token)
            return "/"
        if token is not None and keys:
            scope, _ = verify_scope(keys, token, time.time())
            return scope
        if keys or settings.admin_token is not None:
            raise TokenMissingError(
                "a signed URL (/t/<token>/v1/...) or the admin token is required"
            )
    except (AccessDeniedError, AdminTokenInvalidError, AdminTokenMissingError) as exc:
        reason = "token_missing" if isinstance(exc, AdminTokenMissingError) else exc.code
        raise LicenceDeniedError(reason, exc.detail) from None
    return "/"  # no access control configured: the origin is open


async def grant(request: web.Request, key_ids: list[str]) -> None:
    """Check that the caller may have every key of ``key_ids`` (see the module
    docstring); :class:`KeyNotFoundError` for one its grant does not hold."""
    scope = _grant_of_caller(request)
    if scope == "/":
        return
    track = scope[1:].split("/", 1)[0]
    try:
        presentation, _ = await presentation_of(request.app, track)
    except ObjectNotFoundError:
        raise KeyNotFoundError(key_ids[0]) from None
    held = presentation_key_ids(presentation.renditions)
    for key_id in key_ids:
        if key_id not in held:
            raise KeyNotFoundError(key_id)


async def _keys(request: web.Request, key_ids: list[str]) -> list[bytes]:
    store = request.app.get(KEY_STORE)
    if store is None:
        raise KeyDeliveryOffError(
            "no key-encryption key is configured: set CADENZA_KEY_ENCRYPTION_KEY or "
            "CADENZA_KEY_ENCRYPTION_KEY_FILE"
        )
    found: list[bytes] = []
    for key_id in key_ids:
        try:
            key = await store.get(key_id)
        except KeyStoreError as exc:
            log.error("key store: %s", exc)
            raise KeyDeliveryOffError("the key store could not be read") from None
        if key is None:
            raise KeyNotFoundError(key_id)
        found.append(key)
    return found


def parse_licence_request(body: bytes) -> list[str]:
    """The key ids (32 hex digits each) of a W3C ClearKey licence request (EME 9.1.3);
    :class:`BadLicenceRequestError` for anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadLicenceRequestError("the body is not JSON") from None
    kids = doc.get("kids") if isinstance(doc, dict) else None
    if not isinstance(kids, list) or not 0 < len(kids) <= MAX_KIDS:
        raise BadLicenceRequestError(f'expected {{"kids": [1 to {MAX_KIDS} key ids]}}')
    if doc.get("type", "temporary") != "temporary":
        raise BadLicenceRequestError('only "type": "temporary" licences are issued')
    key_ids: list[str] = []
    for kid in kids:
        key_id = key_id_from_b64url(kid) if isinstance(kid, str) else None
        if key_id is None:
            raise BadLicenceRequestError("a kid is not 16 bytes in base64url")
        key_ids.append(key_id)
    return key_ids


def _refusals(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Count every refusal by reason before the edge's error table answers it."""

    async def counted(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except OriginError as exc:
            request.app[METRICS].licences_refused.labels(exc.code).inc()
            raise

    return counted


@_refusals
async def handle_clearkey_licence(request: web.Request) -> web.Response:
    """``POST /v1/licence/clearkey``: a W3C ClearKey licence for the asked key ids."""
    _limit(request)
    _grant_of_caller(request)  # before the body: a 403 tells nothing of key ids
    settings = request.app[SETTINGS]
    body = await read_body(request, LICENCE_MAX_BYTES, settings.body_timeout_s)
    key_ids = parse_licence_request(body)
    await grant(request, key_ids)
    keys = await _keys(request, key_ids)
    answer = {
        "keys": [
            {"kty": "oct", "kid": key_id_b64url(k), "k": _b64url(v)}
            for k, v in zip(key_ids, keys, strict=True)
        ],
        "type": "temporary",
    }
    _issued(request, KIND_CLEARKEY, key_ids)
    return web.json_response(answer, headers=NO_STORE)


@_refusals
async def handle_aes_key(request: web.Request) -> web.Response:
    """``GET /v1/keys/<key id>``: the 16 bytes of an AES-128 key."""
    _limit(request)
    _grant_of_caller(request)
    key_id = request.match_info["key_id"]
    if len(key_id) != 32 or any(c not in "0123456789abcdef" for c in key_id):
        raise BadLicenceRequestError("a key id is 32 lower-case hex digits")
    await grant(request, [key_id])
    (key,) = await _keys(request, [key_id])
    _issued(request, KIND_AES_128, [key_id])
    return web.Response(body=key, content_type="application/octet-stream", headers=NO_STORE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _issued(request: web.Request, kind: str, key_ids: list[str]) -> None:
    request.app[METRICS].licences_issued.labels(kind).inc()
    log.info("issued %s key(s) %s to %s", kind, ",".join(key_ids), request.remote or "-")


def _peer(request: web.Request) -> str | None:
    """The TCP peer (``request.remote`` is the client's behind trusted proxies)."""
    transport = request.transport
    peer = None if transport is None else transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, list | tuple) and peer else None


def _forwarded_proto(header: str, trusted: TrustedProxies) -> str | None:
    """The ``proto=`` of a ``Forwarded`` list (RFC 7239 5.4) that a trusted proxy
    wrote: the elements are walked from the right (the peer's) while their ``for=``
    names a trusted proxy, as ``origin.proxies`` walks them for the client's address;
    the element the walk stops at was written by the proxy the client reached, and
    its ``proto`` is the scheme the client used."""
    proto = None
    for element in reversed(header.split(",")):
        params: dict[str, str] = {}
        for pair in element.split(";"):
            name, equals, value = pair.partition("=")
            if equals:
                params[name.strip().lower()] = value.strip().strip('"')
        proto = params.get("proto", proto)
        node = params.get("for", "")
        if node.startswith("["):
            node = node[1:].partition("]")[0]
        elif node.count(":") == 1:
            node = node.partition(":")[0]
        if not trusted.trusts(node):
            break
    return proto


def _scheme(request: web.Request) -> str:
    """The scheme the client reached the origin with: the connection's, or behind a
    trusted proxy (``trusted_proxies``) the one its ``X-Forwarded-Proto`` (the
    right-most value: the peer's word) or else ``Forwarded`` ``proto=`` names."""
    scheme = request.scheme
    trusted = request.app.get(TRUSTED_PROXIES)
    if trusted is None or not trusted.trusts(_peer(request)):
        return scheme
    headers = request.headers
    xfp = headers.getall("X-Forwarded-Proto", None)
    fwd = headers.getall("Forwarded", None)
    if xfp is not None:
        claimed: str | None = ",".join(xfp).split(",")[-1]
    elif fwd is not None:
        claimed = _forwarded_proto(",".join(fwd), trusted)
    else:
        return scheme
    claimed = (claimed or "").strip().lower()
    return claimed if claimed in _SCHEMES else scheme


def viewer_root_url(request: web.Request, token: str | None) -> str:
    """The origin's root as this viewer reached it, for the absolute licence URL of an
    encrypted track's MPD (``dashif:Laurl``: players take it as it stands, never
    resolved against the MPD): the client's scheme (:func:`_scheme`), its ``Host``
    field, and the ``/t/<token>`` prefix the MPD was asked under, so a signed MPD
    names a licence URL signed for the same track.

    A request without exactly one valid ``Host`` is :class:`BadRequestError` (RFC 9112
    3.2 asks a 400 of an HTTP/1.1 request without one, or with an invalid one)."""
    hosts = request.headers.getall("Host", [])
    if len(hosts) != 1 or _HOST.fullmatch(hosts[0]) is None:
        raise BadRequestError(
            "the MPD of an encrypted track names its licence URL after exactly one valid Host"
        )
    prefix = "" if token is None else f"{TOKEN_PREFIX}{token}"
    return f"{_scheme(request)}://{hosts[0]}{prefix}"


def add_licence_routes(app: web.Application) -> None:
    """The key-delivery routes, plain and under a signed-URL token; before the
    catch-all media route."""
    trusted = TrustedProxies.of(app[SETTINGS].trusted_proxies)
    if trusted is not None:
        app[TRUSTED_PROXIES] = trusted
    for prefix in ("", "/t/{token}"):
        app.router.add_post(prefix + CLEARKEY_LICENCE_PATH, handle_clearkey_licence)
        app.router.add_get(prefix + KEY_PATH_PREFIX + "{key_id}", handle_aes_key)
    app.cleanup_ctx.append(key_store_ctx)


__all__ = [
    "KEY_STORE",
    "add_licence_routes",
    "grant",
    "handle_aes_key",
    "handle_clearkey_licence",
    "parse_licence_request",
    "viewer_root_url",
]
