"""The hot path for segments and manifests, ahead of aiohttp on the same connections.

A plain request for a media file — a segment (``.m4s``), an init segment
(``.mp4``), a playlist (``.m3u8``) or an MPD (``.mpd``) — is answered by
:class:`FastPathProtocol` from the hot cache: one head with the same header
lines, in the same order, that the aiohttp path sends for that request (tests
compare them header for header, gzip included), the ``Date`` of this second,
then the body; or ``304`` for ``If-None-Match``/``If-Modified-Since`` that
match, or ``206`` for a single satisfiable ``Range`` (``If-Range`` permitting),
decided by the same functions.  A file not in the cache (or a manifest
past its TTL) is loaded through the same cache, single-flight, as the aiohttp
path loads it; the connection waits for it, then goes on.

A request whose query names a session (``CMCD`` and ``sid`` arguments, as
hls.js and dash.js send CMCD in query mode, CTA-5004) or filters renditions
(``codec``, ``min_bitrate``, ``max_bitrate``) is answered here too, by the
functions ``cadenza.origin.app.handle_file`` uses: its CMCD folded into the session
(``cadenza.origin.telemetry.observe``), then a filtered and steered master playlist
or MPD (``render_manifest``) or the file with CMSD (``cmsd_for``), private.
Everything such an answer needs that can fail (loads, the filter) is done
before the session is touched, so one handed over is never folded in twice.

Every other request is handed, together with every byte not yet answered, to
an aiohttp ``RequestHandler`` that takes the connection over for good:
a query with any other argument, or a ``Range`` with a query, an
unsatisfiable range,
``If-Match``, ``If-Unmodified-Since`` (rare on GET; aiohttp answers a failed
one 412), ``CMCD-*``, ``Connection`` (other than
keep-alive), ``Expect``, ``Upgrade``, ``Content-Length`` or
``Transfer-Encoding`` header, HTTP/1.0, a path that
another route answers (``/v1/``, ``/player/``...) or that ``safe_key``
refuses, a manifest when content steering is configured (those are always
rendered), a load that fails (404, 503, too large: aiohttp answers or streams
it, with its own error mapping), a head that is too large, has too many
fields or does not parse.  So the fast path only ever answers what the full
path would have answered identically, and never answers an error.

Why: the aiohttp path costs ~240 µs of one core per hot 64 KB segment here
(request and response objects, middleware, routing), several times the cost
of sending the bytes; a bare aiohttp app is itself 0.21x nginx on this
machine.  Request heads are parsed by httptools (the llhttp parser that
aiohttp's C parser also wraps), one complete head at a time, so the framing
and the handover point are always exact.

Keep-alive: a connection with nothing answered for ``keepalive_timeout_s``
is closed, as aiohttp does.  Back-pressure: while the transport's write
buffer is over its high-water mark, or a load is pending and 64 KiB are read
ahead, reading is paused, so a client that pipelines requests and does not
read cannot make the origin buffer more than one round of answers.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final
from urllib.parse import unquote_to_bytes

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from cachetools import LRUCache

from cadenza.manifests.model import MASTER_NAME, MPD_NAME
from cadenza.origin.app import (
    EXPOSED_HEADERS,
    FILTER_KEYS,
    ObjectAnswer,
    cmsd_for,
    filter_values,
    load_object,
    plan_object_answer,
    presentation_of,
    private_control,
    render_manifest,
    steered_segment,
)
from cadenza.origin.auth import TOKEN_PREFIX
from cadenza.origin.cache import CachedObject
from cadenza.origin.cmcd import HEADER_NAMES as CMCD_HEADER_NAMES
from cadenza.origin.errors import OriginError, RangeNotSatisfiableError
from cadenza.origin.keys import CACHE, METRICS, SETTINGS
from cadenza.origin.paths import safe_key
from cadenza.origin.telemetry import observe

log = logging.getLogger("cadenza.origin.fastpath")

# Request headers that change the answer (or the framing): such a request goes
# to aiohttp.  Lower case, as compared.
_HANDED_OVER_HEADERS: Final = frozenset(
    {
        b"if-match",
        b"if-unmodified-since",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        *(name.lower().encode() for name in CMCD_HEADER_NAMES),
    }
)
# Headers the answer is decided from (origin.app.plan_object_answer), each read
# once: a repeated one is left to aiohttp, which folds repeated fields.
_READ_HEADERS: Final = {
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"range": "range",
    b"if-range": "if_range",
    b"ect": "ect",  # the session's network key (origin.sessions.network_key_for)
}
# The query arguments this path reads (a session's, rendition filters): any
# other is handed over.
_QUERY_ARGUMENTS: Final = frozenset({"CMCD", "sid", *FILTER_KEYS})
_TOKEN_PATH: Final = TOKEN_PREFIX.encode()  # signed URLs: aiohttp strips or checks the token
_SEGMENT_SUFFIXES: Final = (".m4s", ".mp4")
_MANIFEST_SUFFIXES: Final = (".m3u8", ".mpd")
# Rendered 200 heads kept per (object, gzip, cache result) (an entry is ~400
# bytes; rebuilt when the cached object changes, e.g. after a repackage or a
# manifest refresh).
_HEADS_KEPT: Final = 4096
# Answers queued per round before the transport is asked to take them: a client
# pipelining thousands of requests in one read costs at most this much at once.
_ROUND_BYTES: Final = 1 << 20
# Bytes read ahead while a request waits for a load (pipelined requests).
_READ_AHEAD_BYTES: Final = 64 * 1024
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class Handover(enum.StrEnum):
    """Why a connection left the fast path: the first request it could not
    answer (``cadenza_fast_path_handovers_total{reason}``)."""

    MALFORMED = "malformed"  # does not parse, or not CRLF-framed
    OVERSIZED = "oversized"  # over max_header_bytes or max_headers
    VERSION = "version"  # not HTTP/1.1
    METHOD = "method"  # not GET or HEAD
    HEADER = "header"  # a header that changes the answer or the framing
    BODY = "body"  # announces a body
    PATH = "path"  # not a media file, another route's, signed, or refused
    QUERY = "query"  # arguments other than a session's, or Range with them
    RANGE = "range"  # unsatisfiable (aiohttp's 416)
    LOAD_FAILED = "load_failed"  # not found, storage down, too large
    ERROR = "error"  # an exception while answering


def _unsent(pieces: Sequence[bytes | memoryview], sent_bytes: int) -> list[bytes | memoryview]:
    """What is left of ``pieces`` after the first ``sent_bytes`` went out."""
    for index, piece in enumerate(pieces):
        if sent_bytes < len(piece):
            return [memoryview(piece)[sent_bytes:], *pieces[index + 1 :]]
        sent_bytes -= len(piece)
    return []


class _Head:
    """httptools callbacks for one request head."""

    __slots__ = (
        "accepts_gzip",
        "complete",
        "ect",
        "fields",
        "handed_over",
        "if_modified_since",
        "if_none_match",
        "if_range",
        "range",
        "url",
    )

    def __init__(self) -> None:
        self.on_message_begin()

    def on_message_begin(self) -> None:
        self.url = b""
        self.fields = 0
        self.handed_over = False
        self.complete = False
        self.accepts_gzip = False
        self.if_none_match: str | None = None
        self.if_modified_since: str | None = None
        self.range: str | None = None
        self.if_range: str | None = None
        self.ect: str | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        lowered = name.lower()
        if lowered in _HANDED_OVER_HEADERS or (
            lowered == b"connection" and value.strip().lower() != b"keep-alive"
        ):
            self.handed_over = True
        elif lowered == b"accept-encoding":
            # As origin.app.respond_with_object decides (one header; a repeated
            # one is left to aiohttp, which folds them).
            if self.accepts_gzip:
                self.handed_over = True
            self.accepts_gzip = b"gzip" in value.lower()
        elif (field := _READ_HEADERS.get(lowered)) is not None:
            if getattr(self, field) is not None:
                self.handed_over = True
            setattr(self, field, value.decode("latin-1"))

    def on_message_complete(self) -> None:
        self.complete = True


def query_arguments(query: bytes) -> dict[str, str] | None:
    """The ``CMCD``, ``sid`` and rendition-filter arguments of a query string,
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
        if not equals or name not in _QUERY_ARGUMENTS or name in arguments:
            return None
        try:
            arguments[name] = unquote_to_bytes(raw_value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return arguments


@dataclass(frozen=True, slots=True)
class Load:
    """A request to answer once ``key`` is loaded into the cache; also what any
    answer other than a plain hit is decided from.  With ``query``, it is
    answered as ``cadenza.origin.app.handle_file`` answers it: a session's CMCD folded
    in, a manifest filtered and steered."""

    key: str
    route: str
    is_get: bool
    accepts_gzip: bool
    if_none_match: str | None
    if_modified_since: str | None
    range: str | None
    if_range: str | None
    started_s: float
    query: dict[str, str] | None = None  # its arguments (query_arguments)
    ect: str | None = None
    remote: str | None = None


Answer = tuple[bytes, bytes | memoryview | None]  # head, body (None for HEAD)


class HotResponder:
    """Answers one complete request head from the hot cache, says what to load
    first, or says it cannot (hand the request to aiohttp).

    :meth:`answer` does no I/O; :meth:`load` awaits the cache (and storage).
    """

    def __init__(self, app: web.Application) -> None:
        settings = app[SETTINGS]
        self._app = app
        self._cache = app[CACHE]
        self._metrics = app[METRICS]
        self.max_head_bytes: Final = settings.max_header_bytes
        self._max_fields = settings.max_headers
        # Content steering puts pathways into every master playlist and MPD.
        self._manifests = not settings.pathways
        self._cors = f"Access-Control-Allow-Origin: {settings.cors_allow_origin}\r\n"
        self._cors += f"Access-Control-Expose-Headers: {EXPOSED_HEADERS}\r\n"
        self._vary_origin = settings.cors_allow_origin != "*"
        # First path segments that routes other than the file catch-all answer.
        self._routed = frozenset(
            resource.canonical.lstrip("/").split("/", 1)[0]
            for resource in app.router.resources()
            if resource.canonical != r"/{path}"
        )
        # (id(object), gzip flag, cache result) -> (object, head, gzip copy sent).
        # The flag is the request's Accept-Encoding in _hit and the decided
        # encoding in _respond: the same head either way (without a gzip copy
        # both are the identity head).  The object in the entry keeps its id.
        self._heads: LRUCache[tuple[int, bool, str], tuple[CachedObject, bytes, bool]] = LRUCache(
            maxsize=_HEADS_KEPT
        )
        self.refusal = Handover.ERROR  # why the last request was not answered
        self._head = _Head()
        self._parser = httptools.HttpRequestParser(self._head)
        self._date_s = -1
        self._date_lines = b""
        # Hits not yet in the metrics, per route (counted at the end of the loop turn).
        self._batch_latencies_s: dict[str, list[float]] = {}
        self._batch_bytes: dict[str, int] = {}

    def _tail(self) -> bytes:
        """``Date`` (this second's) and ``Server``, as aiohttp writes them, and the blank line."""
        now_s = int(time.time())
        if now_s != self._date_s:
            self._date_s = now_s
            self._date_lines = (
                f"Date: {formatdate(now_s, usegmt=True)}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
            ).encode("latin-1")
        return self._date_lines

    def _parse(self, head: bytes) -> _Head | None:
        """The head's fields, if it is a complete GET or HEAD that this path may
        answer; None otherwise.  The parser is reused while heads are answered,
        and replaced whenever one is not (after ``Connection: close``, HTTP/1.0,
        an announced body or an error it would refuse the next head)."""
        state = self._head
        try:
            self._parser.feed_data(head)
        except httptools.HttpParserError:
            self._parser = httptools.HttpRequestParser(state)
            self.refusal = Handover.MALFORMED
            return None
        if not state.complete:  # it announced a body: the parser waits for it
            reason = Handover.BODY
        elif state.handed_over:
            reason = Handover.HEADER
        elif state.fields > self._max_fields:
            reason = Handover.OVERSIZED
        elif self._parser.get_http_version() != "1.1":
            reason = Handover.VERSION
        else:
            return state
        self._parser = httptools.HttpRequestParser(state)
        self.refusal = reason
        return None

    def count_handover(self, reason: Handover) -> None:
        self._metrics.fast_path_handovers.labels(reason.value).inc()

    def _key(self, url: bytes) -> tuple[str, str] | None:
        """(storage key, metrics route) for a URL this path serves, else None."""
        if url.startswith(_TOKEN_PATH):
            return None
        key = url[1:].decode("latin-1")
        if key.endswith(_SEGMENT_SUFFIXES):
            route = "segment"
        elif key.endswith(_MANIFEST_SUFFIXES) and self._manifests:
            route = "manifest"
        else:
            return None
        if key.split("/", 1)[0] in self._routed or "/" not in key:
            return None
        return key, route

    def answer(self, head: bytes, remote: str | None = None) -> Answer | Load | None:
        """The answer to a request head, a :class:`Load` to do first, or None.
        ``remote``: the peer's address, a session's network key."""
        started_s = time.perf_counter()
        if len(head) > self.max_head_bytes:
            self.refusal = Handover.OVERSIZED
            return None
        if not head.startswith((b"GET /", b"HEAD /")):
            self.refusal = Handover.METHOD
            return None
        state = self._parse(head)
        if state is None:
            return None
        path, question, query = state.url.partition(b"?")
        found = self._key(path)
        if found is None:
            self.refusal = Handover.PATH
            return None
        key, route = found
        arguments = None
        if question:
            arguments = query_arguments(query)
            if arguments is None or state.range is not None:
                self.refusal = Handover.QUERY
                return None
        is_get = self._parser.get_method() == b"GET"
        # A query's answer is loaded (and counted) by load_object.
        obj = self._cache.hot(key) if arguments is None else None
        plain = (
            state.if_none_match is None and state.if_modified_since is None and state.range is None
        )
        if obj is not None and plain:
            return self._hit(obj, route, is_get, state.accepts_gzip, started_s)
        asked = Load(
            key,
            route,
            is_get,
            state.accepts_gzip,
            state.if_none_match,
            state.if_modified_since,
            state.range,
            state.if_range,
            started_s,
            arguments,
            state.ect,
            remote,
        )
        if obj is not None:
            return self._respond(obj, "hit", asked)
        if self._cache.peek(key) is not None:  # cached keys passed safe_key already
            return asked
        try:  # the check the full path makes
            valid = safe_key("/" + key) == key
        except OriginError:
            valid = False
        if valid:
            return asked
        self.refusal = Handover.PATH
        return None

    def _hit(
        self,
        obj: CachedObject,
        route: str,
        is_get: bool,
        accepts_gzip: bool,
        started_s: float,
    ) -> Answer:
        """The common case (no validators, no Range): a head rendered once per
        object and encoding, metrics counted per loop turn."""
        entry = self._heads.get((id(obj), accepts_gzip, "hit"))
        if entry is None or entry[0] is not obj:
            answer = plan_object_answer(
                obj,
                accepts_gzip=accepts_gzip,
                range_header=None,
                if_range=None,
                if_none_match=None,
                if_modified_since=None,
            )
            entry = (obj, self._render_head(obj, "hit", answer), answer.gzip)
            self._heads[(id(obj), accepts_gzip, "hit")] = entry
        body = _body(obj, entry[2]) if is_get else None
        if not self._batch_latencies_s:
            asyncio.get_running_loop().call_soon(self._count_batch)
        self._batch_latencies_s.setdefault(route, []).append(time.perf_counter() - started_s)
        if body is not None:
            self._batch_bytes[route] = self._batch_bytes.get(route, 0) + len(body)
        return entry[1] + self._tail(), body

    async def load(self, asked: Load) -> Answer | None:
        """Load the object into the cache, then answer; None when the load fails
        (aiohttp then answers the request, with its own error mapping)."""
        if asked.query is not None:
            answer = await self._answer_query(asked, asked.query)
            if answer is None:
                self.refusal = Handover.LOAD_FAILED
            return answer
        try:
            obj, how = await load_object(self._app, asked.key)
        except Exception:  # not found, storage down, too large: aiohttp's to answer
            self.refusal = Handover.LOAD_FAILED
            return None
        return self._respond(obj, how, asked)

    async def _answer_query(self, asked: Load, arguments: dict[str, str]) -> Answer | None:
        """A request with a query, answered as origin.app.handle_file answers
        it: a session's CMCD folded in, then a manifest filtered and steered,
        or the file with CMSD when steering is on.  Whatever can fail (the
        loads, a filter that is invalid or matches nothing) is done before the
        session is touched, so a request handed over from here is never
        folded in twice."""
        app = self._app
        key = asked.key
        track, _, name = key.partition("/")
        manifest = name in (MASTER_NAME, MPD_NAME)
        selected = filter_values(arguments) if manifest else ()
        session = "CMCD" in arguments or "sid" in arguments
        # A known session gets a steered manifest or CMSD on a media segment.
        steers = session and app[SETTINGS].steering and (manifest or steered_segment(key))
        model = None
        loaded = None
        filtered = None
        try:
            if selected or steers:
                model = await presentation_of(app, track)
            if selected:  # rendered whether or not a session steers it: checks the filter
                filtered = await render_manifest(
                    app, key, selected, None, None, personal_pathways=False, model=model
                )
            # A steered or filtered manifest is rendered instead of the file:
            # load the file later, if at all, unless CMCD is folded in first.
            if filtered is None and (not manifest or not steers or "CMCD" in arguments):
                loaded = await load_object(app, key)
        except Exception:  # missing, damaged, a bad filter: aiohttp's to answer
            return None
        observed = None
        if session:
            observed = await observe(
                app,
                track,
                cmcd_query=arguments.get("CMCD"),
                sid_query=arguments.get("sid"),
                headers={} if asked.ect is None else {"ECT": asked.ect},
                remote=asked.remote,
            )
        if observed is not None and steers and manifest:
            filtered = await render_manifest(
                app, key, selected, observed, None, personal_pathways=False, model=model
            )
        if filtered is not None:
            vary = "Accept-Encoding, CMCD-Session" if filtered.vary_session else None
            return self._respond(filtered.obj, filtered.how, asked, vary=vary)
        if loaded is None:  # only a sid, that names no session: nothing folded in
            try:
                loaded = await load_object(app, key)
            except Exception:
                return None
        obj, how = loaded
        if observed is None or not steers or manifest:
            return self._respond(obj, how, asked)
        cmsd = await cmsd_for(app, key, observed, model)
        if cmsd is None:
            return self._respond(obj, how, asked)
        return self._respond(
            obj,
            how,
            asked,
            control=private_control(obj.cache_control),
            extra=f"CMSD-Static: {cmsd[0]}\r\nCMSD-Dynamic: {cmsd[1]}\r\n",
        )

    def _respond(
        self,
        obj: CachedObject,
        how: str,
        asked: Load,
        *,
        control: str | None = None,
        extra: str = "",
        vary: str | None = None,
    ) -> Answer | None:
        """Any answer but the plain hit, decided by origin.app.plan_object_answer
        as on the aiohttp path; None for an unsatisfiable range (aiohttp's 416).
        ``control``, ``extra`` and ``vary``: a session's answer (see
        :meth:`_render_head`)."""
        try:
            answer = plan_object_answer(
                obj,
                accepts_gzip=asked.accepts_gzip,
                range_header=asked.range,
                if_range=asked.if_range,
                if_none_match=asked.if_none_match,
                if_modified_since=asked.if_modified_since,
            )
        except RangeNotSatisfiableError:
            self.refusal = Handover.RANGE
            return None
        if answer.status == 304:  # handle_file adds CMSD to 200 and 206 only
            control, extra = None, ""
        body: bytes | memoryview = _body(obj, answer.gzip)
        if answer.span is not None:  # sliced without a copy
            body = memoryview(obj.body)[answer.span.start : answer.span.end + 1]
        sent = body if asked.is_get and answer.status != 304 else None
        self._metrics.request_done(
            asked.route,
            answer.status,
            how,
            None if sent is None else len(sent),
            time.perf_counter() - asked.started_s,
        )
        if answer.status == 200 and control is None and not extra and vary is None:
            # Rendered once per object, encoding and cache result (a steered
            # manifest is one object per guidance shape).
            entry = self._heads.get((id(obj), answer.gzip, how))
            if entry is None or entry[0] is not obj:
                entry = (obj, self._render_head(obj, how, answer, len(body)), answer.gzip)
                self._heads[(id(obj), answer.gzip, how)] = entry
            head = entry[1]
        else:
            head = self._render_head(
                obj, how, answer, len(body), control=control, extra=extra, vary=vary
            )
        return head + self._tail(), sent

    def _count_batch(self) -> None:
        """The metrics of this loop turn's hits, in one go: per answer, each
        counter increment costs as much as a tenth of the answer itself (a
        locked, and with ``--workers`` memory-mapped, write)."""
        latencies, self._batch_latencies_s = self._batch_latencies_s, {}
        sizes, self._batch_bytes = self._batch_bytes, {}
        for route, latencies_s in latencies.items():
            self._metrics.hits_done(route, len(latencies_s), sizes.get(route, 0), latencies_s)

    def _render_head(
        self,
        obj: CachedObject,
        how: str,
        answer: ObjectAnswer,
        length: int | None = None,
        *,
        control: str | None = None,
        extra: str = "",
        vary: str | None = None,
    ) -> bytes:
        """The order and spelling of origin.app.respond_with_object, with a
        session's changes as origin.app.handle_file makes them (``control``
        replaces Cache-Control in place, ``extra`` lines are added after the
        object's, ``vary`` replaces a manifest's Vary), then the CORS lines of
        edge_middleware, then what aiohttp adds."""
        lines = [
            _STATUS_LINES[answer.status],
            f"Content-Type: {obj.content_type}\r\n",
            f"Cache-Control: {obj.cache_control if control is None else control}\r\n",
            f"ETag: {answer.etag}\r\n",
            f"Last-Modified: {obj.last_modified}\r\n",
            "Accept-Ranges: bytes\r\n",
            f"X-Cadenza-Cache: {how}\r\n",
        ]
        if obj.manifest:
            vary = vary or "Accept-Encoding"
            lines.append(f"Vary: {vary}, Origin\r\n" if self._vary_origin else f"Vary: {vary}\r\n")
        span = answer.span
        if answer.status == 304:
            pass
        elif answer.gzip:
            lines.append("Content-Encoding: gzip\r\n")
        elif span is not None:
            lines.append(f"Content-Range: bytes {span.start}-{span.end}/{len(obj.body)}\r\n")
        lines.append(extra)
        lines.append(self._cors)
        if self._vary_origin and not obj.manifest:
            lines.append("Vary: Origin\r\n")
        if answer.status != 304:  # aiohttp sends none with a 304 (RFC 9110 8.6)
            size = len(_body(obj, answer.gzip)) if length is None else length
            lines.append(f"Content-Length: {size}\r\n")
        return "".join(lines).encode("latin-1")


_STATUS_LINES: Final = {
    200: "HTTP/1.1 200 OK\r\n",
    206: "HTTP/1.1 206 Partial Content\r\n",
    304: "HTTP/1.1 304 Not Modified\r\n",
}


def _body(obj: CachedObject, gzip: bool) -> bytes:
    return obj.gzip_body if gzip and obj.gzip_body is not None else obj.body


class FastPathProtocol(asyncio.Protocol):
    """One connection: answered here while every request is one this path
    serves; at the first that is not, handed (with its unanswered bytes) to
    ``fallback()``, aiohttp's protocol factory."""

    def __init__(
        self,
        responder: HotResponder,
        fallback: Callable[[], asyncio.Protocol],
        connections: set[FastPathProtocol],
        keepalive_timeout_s: float,
    ) -> None:
        self._responder = responder
        self._fallback = fallback
        self._connections = connections
        self._keepalive_timeout_s = keepalive_timeout_s
        self._transport: asyncio.Transport | None = None
        self.peer: object = None
        self._remote: str | None = None  # as aiohttp's request.remote
        self._fd = -1
        self._buffer = b""
        self._last_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._eof = False
        self._close_when_idle = False
        # While a load is pending: the request's head (handed to aiohttp if the
        # load fails) and the task (awaited by a graceful shutdown).
        self._loading_head: bytes | None = None
        self.loading: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = transport.get_extra_info("peername")
        if isinstance(self.peer, (list, tuple)):
            self._remote = str(self.peer[0])
        elif self.peer is not None:
            self._remote = str(self.peer)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp does
        self._connections.add(self)
        loop = asyncio.get_running_loop()
        self._last_s = loop.time()
        self._timer = loop.call_at(self._last_s + self._keepalive_timeout_s, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if self._loading_head is not None:
            self._update_reading()  # kept until the load is answered
        else:
            self._answer_buffered()

    def eof_received(self) -> bool | None:
        if self._loading_head is not None or (self._write_paused and self._buffer):
            self._eof = True  # answer what is asked first, then close
            return True
        return None  # every complete request is answered: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        self._answer_buffered()

    # -- answering ----------------------------------------------------------
    def _update_reading(self) -> None:
        """Read only while answers can be written, and while a load is pending
        only up to ``_READ_AHEAD_BYTES`` (pausing and resuming cost two
        syscalls: not worth it for the next request or two)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        read_ahead = self._loading_head is not None and len(self._buffer) > _READ_AHEAD_BYTES
        if self._write_paused or read_ahead or self._eof:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _answer_buffered(self) -> None:
        """Answer the complete heads buffered, a round of at most ``_ROUND_BYTES``
        at a time, while the transport takes them; start a load, or hand over at
        the first that this path cannot answer."""
        responder = self._responder
        while self._transport is not None and not self._write_paused and self._loading_head is None:
            transport = self._transport
            buffer = self._buffer
            out: list[bytes | memoryview] = []
            size = 0
            start = 0
            while size < _ROUND_BYTES:
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    break
                answer = responder.answer(buffer[start : end + 4], self._remote)
                if answer is None:
                    self._hand_over(out, buffer[start:], responder.refusal)
                    return
                if isinstance(answer, Load):
                    self._buffer = buffer[end + 4 :]
                    self._send_round(transport, out)
                    self._start_load(answer, buffer[start : end + 4])
                    return
                out.append(answer[0])
                size += len(answer[0])
                if answer[1] is not None:
                    out.append(answer[1])
                    size += len(answer[1])
                start = end + 4
            rest = buffer[start:] if start else buffer
            if size < _ROUND_BYTES and len(rest) > responder.max_head_bytes:
                self._hand_over(out, rest, Handover.OVERSIZED)  # aiohttp's verdict: 431 or 400
                return
            if size < _ROUND_BYTES and b"\n\n" in rest:
                self._hand_over(out, rest, Handover.MALFORMED)  # not CRLF-framed
                return
            self._buffer = rest
            self._send_round(transport, out)  # may call pause_writing at once
            if size < _ROUND_BYTES:
                break  # every complete head is answered
        idle = not self._write_paused and self._loading_head is None
        if self._transport is not None and idle and self._eof:
            self._transport.close()  # the client had finished sending: all answered

    def _send_round(self, transport: asyncio.Transport, out: list[bytes | memoryview]) -> None:
        if out:
            self._last_s = asyncio.get_running_loop().time()
            self._send(transport, out)

    def _start_load(self, request: Load, head: bytes) -> None:
        self._loading_head = head
        self._update_reading()
        self.loading = asyncio.get_running_loop().create_task(self._load(request))

    async def _load(self, request: Load) -> None:
        responder = self._responder
        try:
            answer = await responder.load(request)
        except Exception:
            # A bug, or a session store failing past its fallback: aiohttp
            # answers it (its 500 or 503), so the connection never hangs; a
            # session's CMCD may then be folded in a second time.
            log.exception("fast path could not answer /%s; handed to aiohttp", request.key)
            responder.refusal = Handover.ERROR
            answer = None
        finally:
            self.loading = None
        head, self._loading_head = self._loading_head, None
        transport = self._transport
        if transport is None or head is None:
            return  # the client went away meanwhile
        if answer is None:
            self._hand_over([], head + self._buffer, responder.refusal)
            return
        self._send_round(transport, [answer[0]] if answer[1] is None else [answer[0], answer[1]])
        if self._close_when_idle:
            transport.close()  # shutting down: this answer was in flight, the rest is not
            return
        self._update_reading()
        self._answer_buffered()

    def _send(self, transport: asyncio.Transport, pieces: Sequence[bytes | memoryview]) -> None:
        """``transport.writelines(pieces)`` without its copy: the transport's
        ``writelines`` joins head and body into a new 64 KB object before its
        ``send``.  While nothing is queued in the transport, one ``writev`` on
        its socket sends the pieces where they are (order is kept: the
        transport holds nothing that should go first); what the socket does not
        take goes through the transport as usual."""
        if (
            self._fd >= 0
            and len(pieces) <= _IOV_MAX
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        ):
            try:
                sent_bytes = os.writev(self._fd, pieces)
            except OSError:  # full (EAGAIN) or broken: the transport takes it from here
                sent_bytes = 0
            if sent_bytes:
                rest = _unsent(pieces, sent_bytes)
                if rest:
                    transport.writelines(rest)
                return
        transport.writelines(pieces)

    # -- the rest -----------------------------------------------------------
    def close(self) -> None:
        """Graceful shutdown: close once nothing asked is left unanswered (the
        transport still sends what it buffered)."""
        if self._transport is None:
            return
        if self._loading_head is not None:
            self._close_when_idle = True
        else:
            self._transport.close()

    def _hand_over(
        self, answered: list[bytes | memoryview], pending: bytes, reason: Handover
    ) -> None:
        transport = self._transport
        assert transport is not None
        self._responder.count_handover(reason)
        if answered:
            self._send(transport, answered)  # ahead of anything aiohttp writes
        write_paused, eof = self._write_paused, self._eof
        self._forget()
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if not transport.is_closing():
            transport.resume_reading()  # aiohttp reads from here on
        if write_paused:
            handler.pause_writing()  # it will see resume_writing
        if pending:
            handler.data_received(pending)
        if eof:
            handler.eof_received()

    def _forget(self) -> None:
        self._transport = None
        self._buffer = b""
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_idle(self) -> None:
        if self._transport is None:
            return
        loop = asyncio.get_running_loop()
        deadline = self._last_s + self._keepalive_timeout_s
        if self._loading_head is None and loop.time() >= deadline:
            self._transport.close()
            self._forget()
        else:
            self._timer = loop.call_at(max(deadline, loop.time() + 0.1), self._check_idle)
