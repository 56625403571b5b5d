"""The request description every transport hands the answer core, and the
readings of request fields that both transports share: ``Accept-Encoding``
(with its weights), the HTTP version, the query arguments the core reads.

A transport parses a request once, into a :class:`MediaRequest`; a request
the core will not answer is refused with a :class:`Handover` reason (the
transport then hands it to the full aiohttp path)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote_to_bytes

from cadenza.origin.tcp_info import Connection

FILTER_KEYS: Final = frozenset({"codec", "min_bitrate", "max_bitrate"})
# The query arguments the core reads (a session's, rendition filters, and
# ``abr=origin``: origin-decided playback, core.decided).
QUERY_ARGUMENTS: Final = frozenset({"CMCD", "sid", "abr", *FILTER_KEYS})
NO_FIELDS: Final[Mapping[str, str]] = MappingProxyType({})
_GZIP_CODINGS: Final = frozenset({"gzip", "x-gzip"})  # RFC 9110 8.4.1.3


class Handover(enum.StrEnum):
    """Why a request is not the answer core's on the fast transport: the first
    request of a connection it could not answer
    (``cadenza_fast_path_handovers_total{reason}``)."""

    MALFORMED = "malformed"  # does not parse, or not CRLF-framed
    OVERSIZED = "oversized"  # over max_header_bytes or max_headers
    VERSION = "version"  # not HTTP/1.1
    METHOD = "method"  # not GET or HEAD
    HEADER = "header"  # a header off the allowlist, repeated, or no single Host
    BODY = "body"  # announces a body
    TARGET = "target"  # a fragment (``#``) in the request target
    UPGRADE = "upgrade"  # asks for another protocol (RFC 9110 7.8)
    PATH = "path"  # not a media file, another route's, signed, or refused
    QUERY = "query"  # arguments other than a session's, or Range with them
    RANGE = "range"  # unsatisfiable (aiohttp's 416)
    LOAD_FAILED = "load_failed"  # not found, storage down, too large
    ERROR = "error"  # an exception while answering


class VersionVerdict(enum.Enum):
    """What RFC 9112 2.3 and RFC 9110 15.6.6 make of a request's HTTP version."""

    OK = "ok"  # HTTP/1.0 or HTTP/1.1
    BAD_REQUEST = "bad_request"  # HTTP/0.9-style (no version): 400
    NOT_SUPPORTED = "not_supported"  # any other major version, e.g. HTTP/2.0 on /1.1: 505


def check_version(major: int, minor: int) -> VersionVerdict:
    """HTTP/1.x is served; an HTTP/0.9 simple request (a request line without a
    version) is refused 400 (RFC 9112 2.3: not supported); a request line
    naming another major version is answered 505 (RFC 9110 15.6.6)."""
    if major == 1:
        return VersionVerdict.OK
    if major == 0:
        return VersionVerdict.BAD_REQUEST
    return VersionVerdict.NOT_SUPPORTED


def _weight(params: list[str]) -> float | None:
    """The ``q`` parameter of a coding (1 without one), None when it is not a
    qvalue (RFC 9110 12.4.2: ``0[.ddd]`` or ``1[.000]``)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        whole, _, fraction = value.strip().partition(".")
        if len(fraction) > 3 or not ((fraction.isascii() and fraction.isdigit()) or not fraction):
            return None
        if whole == "0":
            return float(f"0.{fraction or '0'}")
        if whole == "1" and set(fraction) <= {"0"}:
            return 1.0
        return None
    return 1.0


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` (repeated fields joined with ``,``) makes gzip
    acceptable: listed (or matched by ``*`` when not listed) with a weight
    above 0 (RFC 9110 12.5.3; ``x-gzip`` is ``gzip``, 8.4.1.3).  A member with
    a malformed weight is ignored."""
    if not header:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    for member in header.split(","):
        coding, *params = member.split(";")
        coding = coding.strip().lower()
        if coding in _GZIP_CODINGS or coding == "*":
            weight = _weight(params)
            if weight is None:
                continue
            if coding == "*":
                star_q = weight if star_q is None else max(star_q, weight)
            else:
                gzip_q = weight if gzip_q is None else max(gzip_q, weight)
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def query_arguments(query: bytes) -> dict[str, str] | None:
    """The ``CMCD``, ``sid``, ``abr`` and rendition-filter arguments of a query string,
    decoded as aiohttp (yarl) decodes them; None for any query that has another
    argument, a repeated or valueless one, or a spelling whose decoding could
    differ (``+``, ``;``, percent-escapes that are not UTF-8): those are
    handed over."""
    if not query or b"+" in query or b";" in query:
        return None
    arguments: dict[str, str] = {}
    for part in query.split(b"&"):
        raw_name, equals, raw_value = part.partition(b"=")
        name = raw_name.decode("latin-1")
        if not equals or name not in QUERY_ARGUMENTS or name in arguments:
            return None
        try:
            arguments[name] = _unquote(raw_value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return arguments


def _unquote(raw: bytes) -> bytes:
    """``unquote_to_bytes(raw)``, without its per-escape loop for the value of a
    CMCD argument (``quote(payload, safe="")`` of CTA-5004 text: ``%3D``,
    ``%2C`` and ``%22`` for ``=``, ``,`` and ``"``).  None of these decodes to
    ``%``, so when no ``%`` is left after replacing them every escape was one
    of them, decoded as ``unquote_to_bytes`` decodes it; else it decodes."""
    if b"%" not in raw:
        return raw
    decoded = raw.replace(b"%3D", b"=").replace(b"%2C", b",").replace(b"%22", b'"')
    return unquote_to_bytes(raw) if b"%" in decoded else decoded


@dataclass(frozen=True, slots=True)
class MediaRequest:
    """A GET or HEAD for a media file, as a transport parsed it once: what
    every answer other than a plain hit is decided from.  With ``query``, it
    is answered as a session's (its CMCD folded in, a manifest filtered and
    steered)."""

    key: str  # the storage key (``track/rendition/file``)
    route: str  # the metrics route class
    is_get: bool
    accepts_gzip: bool
    if_none_match: str | None
    if_modified_since: str | None
    range: str | None
    if_range: str | None
    started_s: float  # perf_counter when the head was complete
    query: Mapping[str, str] | None = None  # its arguments, as yarl decodes them
    # The fields a session reads (CMCD-*, ECT: origin.sessions.network_key_for).
    headers: Mapping[str, str] = field(default_factory=lambda: NO_FIELDS)
    remote: str | None = None  # the peer's address
    if_match: str | None = None
    if_unmodified_since: str | None = None
    # The connection it came on: a decided segment reads its TCP delivery rate.
    connection: Connection | None = None
