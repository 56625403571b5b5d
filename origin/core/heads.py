"""Response heads for cached objects, rendered to bytes for the fast
transport in the order and spelling the aiohttp path sends them
(``respond_with_object``, a session's CMSD, ``edge_middleware``'s CORS, then
``Content-Length``); and the CORS fields every answer carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cadenza.abr.frozen import fast_init
from cadenza.origin.cache import CachedObject
from cadenza.origin.settings import Settings

if TYPE_CHECKING:
    from cadenza.origin.core.validators import ObjectAnswer

CMCD_HEADERS: Final = "CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session"
EXPOSED_HEADERS: Final = "Content-Length, Content-Range, CMSD-Static, CMSD-Dynamic"
STATUS_LINES: Final = {
    200: "HTTP/1.1 200 OK\r\n",
    206: "HTTP/1.1 206 Partial Content\r\n",
    302: "HTTP/1.1 302 Found\r\n",
    304: "HTTP/1.1 304 Not Modified\r\n",
}
# Every answer's ``Server`` field, on both transports: no versions (RFC 9110
# 10.2.4 warns that detail there helps attackers).
SERVER_NAME: Final = "cadenza"
# A decided segment's redirect: this session's, and this request's only.
REDIRECT_CONTROL: Final = "private, no-store"


def cors_fields(settings: Settings) -> dict[str, str]:
    """The CORS fields of every answer (the Fetch standard's CORS protocol):
    any origin, or the configured one (then ``Vary: Origin``).

    ``Timing-Allow-Origin`` (W3C Resource Timing, the timing-allow check) names the same
    origins: without it a cross-origin page's Resource Timing entries have no transfer
    times, and dash.js then measures a segment's throughput from progress events,
    which a small audio segment may not give (one event: no sample, so no CMCD ``mtp``
    and a worse estimate; see docs/player-models.md)."""
    fields = {
        "Access-Control-Allow-Origin": settings.cors_allow_origin,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Timing-Allow-Origin": settings.cors_allow_origin,
    }
    if settings.cors_allow_origin != "*":
        fields["Vary"] = "Origin"
    return fields


@dataclass(frozen=True, slots=True)
class ObjectChoice:
    """The object a request is answered with, and a session's changes to its
    head: ``control`` replaces Cache-Control, ``cmsd`` adds CMSD-Static and
    CMSD-Dynamic (CTA-5006), ``vary`` replaces a manifest's Vary."""

    obj: CachedObject
    how: str  # the X-Cadenza-Cache value
    control: str | None = None
    cmsd: tuple[str, str] | None = None
    vary: str | None = None
    # A session's preload hint (origin.prefetch): ``Link`` (RFC 8288), with a private control.
    link: str | None = None
    prefetched: bool = False  # the first use of an object prefetch warmed


@fast_init
@dataclass(frozen=True, slots=True)
class Redirect:
    """A segment the origin decided (``?abr=origin``), answered ``302 Found`` to
    the chosen rung's own segment URL (RFC 9110 15.4.3): ``location`` is a
    relative reference (``../aac-128k/seg-00007.m4s``), resolved against the
    request's URL (RFC 9110 10.2.2), so it keeps any path prefix before the
    track (a CDN's, a signed URL's token)."""

    location: str
    how: str = "decided"  # the X-Cadenza-Cache value


@dataclass(frozen=True, slots=True)
class HeadStyle:
    """What of the settings every head shows: its CORS fields."""

    cors: tuple[tuple[str, str], ...]  # without Vary
    vary_origin: bool

    @classmethod
    def of(cls, settings: Settings) -> HeadStyle:
        cors = cors_fields(settings)
        return cls(tuple((n, v) for n, v in cors.items() if n != "Vary"), "Vary" in cors)


def object_body(obj: CachedObject, gzip: bool) -> bytes:
    return obj.gzip_body if gzip and obj.gzip_body is not None else obj.body


def object_fields(
    style: HeadStyle, choice: ObjectChoice, answer: ObjectAnswer
) -> list[tuple[str, str]]:
    """The header fields of a cached object's answer, in order, for both
    transports (aiohttp then adds Content-Length, Date and Server, as the fast
    transport does): the object's fields (a session's Cache-Control in place,
    its Vary instead of a manifest's), the coding or range, CMSD and a preload
    ``Link`` (200 and 206 only), then CORS."""
    obj = choice.obj
    # A session's Cache-Control and CMSD go with 200 and 206 only.
    control = choice.control if choice.control is not None and answer.status != 304 else None
    fields = [
        ("Content-Type", obj.content_type),
        ("Cache-Control", obj.cache_control if control is None else control),
        ("ETag", answer.etag),
        ("Last-Modified", obj.last_modified),
        ("Accept-Ranges", "bytes"),
        ("X-Cadenza-Cache", choice.how),
    ]
    if obj.manifest:
        vary = choice.vary or "Accept-Encoding"
        fields.append(("Vary", f"{vary}, Origin" if style.vary_origin else vary))
    span = answer.span
    if answer.status == 304:
        pass
    elif answer.gzip:
        fields.append(("Content-Encoding", "gzip"))
    elif span is not None:
        fields.append(("Content-Range", f"bytes {span.start}-{span.end}/{len(obj.body)}"))
    if choice.cmsd is not None and answer.status != 304:
        fields += (("CMSD-Static", choice.cmsd[0]), ("CMSD-Dynamic", choice.cmsd[1]))
    if choice.link is not None and answer.status != 304:
        fields.append(("Link", choice.link))
    fields += style.cors
    if style.vary_origin and not obj.manifest:
        fields.append(("Vary", "Origin"))
    return fields


@dataclass(frozen=True, slots=True)
class ObjectReply:
    """A cached object's answer, as both transports send it: the status, the
    ordered header fields (aiohttp then adds Content-Length, Date and Server,
    as the fast transport does), and the body (None for a 304)."""

    status: int
    fields: list[tuple[str, str]]
    body: bytes | memoryview | None


def reply_for(style: HeadStyle, choice: ObjectChoice, answer: ObjectAnswer) -> ObjectReply:
    """The answer planned (``core.validators.plan_object_answer``) for the
    object chosen (``core.answer.choose_object``).  A range is a view of the
    cached bytes, not a copy."""
    obj = choice.obj
    fields = object_fields(style, choice, answer)
    if answer.status == 304:
        return ObjectReply(304, fields, None)
    body: bytes | memoryview = object_body(obj, answer.gzip)
    if answer.span is not None:
        body = memoryview(obj.body)[answer.span.start : answer.span.end + 1]
    return ObjectReply(answer.status, fields, body)


def redirect_reply(style: HeadStyle, redirect: Redirect, is_get: bool) -> ObjectReply:
    """The ``302`` of a decided segment, for both transports: ``Location``,
    ``Cache-Control: private, no-store`` (never cached, by the browser or a
    shared cache: the next request is the next decision), then CORS exposing
    ``Location``; an empty body (none for HEAD, as aiohttp sends it)."""
    fields = [
        ("Location", redirect.location),
        ("Cache-Control", REDIRECT_CONTROL),
        ("X-Cadenza-Cache", redirect.how),
    ]
    fields += (
        (name, f"{value}, Location" if name == "Access-Control-Expose-Headers" else value)
        for name, value in style.cors
    )
    if style.vary_origin:
        fields.append(("Vary", "Origin"))
    return ObjectReply(302, fields, b"" if is_get else None)


def render_head(reply: ObjectReply) -> bytes:
    """A reply's head as the fast transport sends it: the status line, the
    fields, then Content-Length (none with a 304, RFC 9110 8.6); without
    ``Date``, ``Server`` and the blank line."""
    lines = [STATUS_LINES[reply.status]]
    lines += [f"{name}: {value}\r\n" for name, value in reply.fields]
    if reply.body is not None:
        lines.append(f"Content-Length: {len(reply.body)}\r\n")
    return "".join(lines).encode("latin-1")
