"""Access control: signed URLs for media, a bearer token for the admin API.

Signed URLs
-----------
A signed URL carries its token as the first path segment after ``/t/``::

    /t/<expires>.<scope>.<signature>/<track>/master.m3u8

- ``expires``: Unix seconds; the token is refused once ``now > expires``.
- ``scope``: the path the token grants, URL-safe base64 (no padding).  A scope
  ending in ``/`` is a prefix (``/<track>/``: the track's manifests, playlists
  and segments); any other scope is one exact path.  ``/`` grants everything.
- ``signature``: HMAC-SHA256, URL-safe base64 (no padding), over
  ``cadenza-signed-url/1 LF scope LF expires`` with a key of ``signing_keys``.

Why in the path and not in the query: players resolve the URIs a playlist or
MPD lists relative to the manifest's URL, and a relative URL keeps the path but
drops the query.  With the token in the path, a token on ``master.m3u8``
reaches the media playlists, init segments and segments by plain URL
resolution, in every player, with no manifest rewriting (so manifests stay
byte-identical and cacheable).  A CDN strips the segment from its cache key
(``deploy/nginx/edge.conf.template``) and asks ``/v1/auth`` for a verdict, so
every viewer's token shares one cached object and a cached object is never
served without a check.

``verify`` authenticates first (a bad signature says nothing about the rest),
then checks expiry, then the scope.  Several keys are tried (rotation: the
current key signs, the previous ones still verify); every comparison is
``hmac.compare_digest``.  No error message holds a key or an expected
signature.

Admin bearer token
------------------
``/v1/sessions``, ``/v1/sessions/{sid}`` and ``/v1/ladder/...`` (the
``ADMIN_PREFIXES``) require ``Authorization: Bearer <admin_token>`` when the
setting is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Final

from cadenza.origin.errors import (
    AdminTokenInvalidError,
    AdminTokenMissingError,
    BadSignatureError,
    TokenExpiredError,
    TokenMalformedError,
    WrongPathError,
)

TOKEN_PREFIX: Final = "/t/"
DOMAIN: Final = b"cadenza-signed-url/1"
SIGNATURE_CHARS: Final = 43  # 32 bytes of HMAC-SHA256 in unpadded base64
MAX_TOKEN_CHARS: Final = 512
MAX_EXPIRES_DIGITS: Final = 12
# The shape of a token segment.  With signing off a path is taken for a token path
# only when it has this shape, so a track named "t" still plays.
TOKEN_SHAPE: Final = re.compile(
    rf"\A[0-9]{{1,{MAX_EXPIRES_DIGITS}}}\.[A-Za-z0-9_-]{{2,{MAX_TOKEN_CHARS}}}"
    rf"\.[A-Za-z0-9_-]{{{SIGNATURE_CHARS}}}\Z"
)
_SCOPE_SEGMENT: Final = re.compile(r"\A[A-Za-z0-9._-]+\Z")

# The JSON API that only operators use; /v1/beacons, /v1/tracks, /v1/auth and
# /v1/steering (players read it) stay open.  /v1/pathways names the CDNs'
# base URLs and their health, which is for operators only.
ADMIN_PREFIXES: Final = ("/v1/sessions", "/v1/ladder/", "/v1/pathways")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict: only the canonical unpadded encoding of some bytes is accepted."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformedError("the token is not well formed") from None
    if _b64encode(data) != text:
        raise TokenMalformedError("the token is not well formed")
    return data


def check_scope(scope: str) -> str:
    """A scope is ``/``, a folder prefix (``/track/``, ``/track/rung/``) or a path
    (``/track/master.m3u8``) of segments the packager could write."""
    if scope == "/":
        return scope
    if not scope.startswith("/") or len(scope) > MAX_TOKEN_CHARS:
        raise ValueError(f"scope {scope[:60]!r} must be an absolute path")
    segments = scope[1:].removesuffix("/").split("/")
    for segment in segments:
        if not _SCOPE_SEGMENT.match(segment) or segment.startswith("."):
            raise ValueError(f"scope {scope[:60]!r} has a segment that is not allowed")
    return scope


def _signature(key: bytes, scope: str, expires_s: int) -> bytes:
    message = b"\n".join((DOMAIN, scope.encode("utf-8"), str(expires_s).encode("ascii")))
    return hmac.new(key, message, hashlib.sha256).digest()


def sign_path(key: bytes, path: str, expires_s: int) -> str:
    """The token granting ``path`` (a prefix if it ends in ``/``) until ``expires_s``."""
    if not key:
        raise ValueError("the signing key is empty")
    if not 0 <= expires_s < 10**MAX_EXPIRES_DIGITS:
        raise ValueError("expires_s is out of range")
    scope = check_scope(path)
    signature = _signature(key, scope, expires_s)
    return f"{expires_s}.{_b64encode(scope.encode('utf-8'))}.{_b64encode(signature)}"


def signed_url(key: bytes, scope: str, path: str, expires_s: int, base_url: str = "") -> str:
    """``base_url/t/<token>path``: ``path`` (``/track/master.m3u8``) under a token for
    ``scope`` (``/track/``)."""
    if not covers(check_scope(scope), path):
        raise ValueError(f"scope {scope!r} does not cover {path!r}")
    return f"{base_url.rstrip('/')}{TOKEN_PREFIX}{sign_path(key, scope, expires_s)}{path}"


def covers(scope: str, path: str) -> bool:
    return path == scope or (scope.endswith("/") and path.startswith(scope))


def verify(keys: Sequence[bytes], path: str, token: str, now_s: float) -> int:
    """Check that ``token`` grants ``path`` (``/track/rung/file``, canonical) at
    ``now_s``; return its expiry, or raise a typed 403:

    :class:`TokenMalformedError`, :class:`BadSignatureError` (no key made this
    signature: forged, altered, or signed with a key no longer listed),
    :class:`TokenExpiredError`, :class:`WrongPathError` (a valid token for
    another path: swapped)."""
    scope, expires_s = verify_scope(keys, token, now_s)
    if not covers(scope, path):
        raise WrongPathError("the token does not grant this path")
    return expires_s


def verify_scope(keys: Sequence[bytes], token: str, now_s: float) -> tuple[str, int]:
    """Authenticate ``token`` and check its expiry; return its scope and expiry (the
    checks of :func:`verify` before the path's, for a caller that checks the scope
    itself, such as key delivery: a track's token grants that track's keys)."""
    if len(token) > MAX_TOKEN_CHARS or not TOKEN_SHAPE.match(token):
        raise TokenMalformedError("the token is not well formed")
    expires_text, scope_text, signature_text = token.split(".")
    expires_s = int(expires_text)
    try:
        scope = _b64decode(scope_text).decode("utf-8")
        check_scope(scope)
    except (UnicodeDecodeError, ValueError):
        raise TokenMalformedError("the token's scope is not a path") from None
    given = _b64decode(signature_text)
    matched = False
    for key in keys:  # every key, no early exit: the time does not tell which matched
        matched |= hmac.compare_digest(_signature(key, scope, expires_s), given)
    if not matched:
        raise BadSignatureError("the token's signature does not match")
    if now_s > expires_s:
        raise TokenExpiredError("the token has expired")
    return scope, expires_s


def split_token_path(raw_path: str, *, strict: bool) -> tuple[str | None, str]:
    """``/t/<token>/rest`` -> (token, ``/rest``); any other path -> (None, path).

    ``strict`` (signing on): every ``/t/...`` path is a token path, whatever its
    second segment looks like (``verify`` then refuses a malformed one).  Not
    strict: only a token-shaped second segment makes a token path."""
    if not raw_path.startswith(TOKEN_PREFIX):
        return None, raw_path
    token, slash, rest = raw_path[len(TOKEN_PREFIX) :].partition("/")
    if not strict and not TOKEN_SHAPE.match(token):
        return None, raw_path
    return token, slash + rest


def redact_path(path: str) -> str:
    """The path with a token segment replaced, for logs."""
    token, rest = split_token_path(path, strict=True)
    return path if token is None else f"{TOKEN_PREFIX}<token>{rest}"


def check_bearer(header: str | None, expected: str) -> None:
    """``Authorization: Bearer <token>`` against ``expected``: missing (or another
    scheme) is :class:`AdminTokenMissingError` (401), wrong is
    :class:`AdminTokenInvalidError` (403)."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AdminTokenMissingError("this endpoint requires an admin bearer token")
    given = credentials.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise AdminTokenInvalidError("the bearer token is not valid")
