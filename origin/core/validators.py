"""Validators and conditional requests for cached objects (RFC 9110 13.1 and
13.2.2), ranges (RFC 9110 14) and the gzip choice, decided once for the
aiohttp path and the fast transport."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from cadenza.origin.cache import CachedObject
from cadenza.origin.core.request import MediaRequest
from cadenza.origin.errors import PreconditionFailedError
from cadenza.origin.ranges import ByteSpan, parse_range


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
    path and the fast transport: gzip for a manifest that accepts it (never with a
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


def plan_for(obj: CachedObject, asked: MediaRequest) -> ObjectAnswer:
    """:func:`plan_object_answer` for a request as a transport described it."""
    return plan_object_answer(
        obj,
        accepts_gzip=asked.accepts_gzip,
        range_header=asked.range,
        if_range=asked.if_range,
        if_none_match=asked.if_none_match,
        if_modified_since=asked.if_modified_since,
        if_match=asked.if_match,
        if_unmodified_since=asked.if_unmodified_since,
    )
