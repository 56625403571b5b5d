"""The hot path for segments, ahead of aiohttp on the same connections.

A segment (``.m4s``) or init segment (``.mp4``) already in the hot cache is
answered by :class:`FastPathProtocol` straight from memory: one precomputed
head with the same header lines, in the same order, that the aiohttp path
sends for that request (a test compares them header for header), the
``Date`` of this second, then the body.  Every other request is handed,
together with every byte not yet answered, to an aiohttp ``RequestHandler``
that takes the connection over for good: anything with a query (CMCD,
``sid``, filters), a ``Range``, conditional, ``CMCD-*``, ``Connection`` (other
than keep-alive), ``Expect``, ``Upgrade``, ``Content-Length`` or
``Transfer-Encoding`` header, HTTP/1.0, a manifest, a miss, a token path, a
head that is too large, has too many fields or does not parse.  So the fast
path only ever answers what the full path would have answered identically,
and never answers an error: aiohttp does, with its own parser's verdict.

Why: the aiohttp path costs ~240 µs of one core per hot 64 KB segment here
(request and response objects, middleware, routing), several times the
cost of sending the bytes; a bare aiohttp app is itself 0.21x nginx on this
machine.  Request heads are parsed by httptools (the llhttp parser that
aiohttp's C parser also wraps), one complete head at a time, so the framing
and the handover point are always exact.

Keep-alive: a connection with nothing answered for ``keepalive_timeout_s``
is closed, as aiohttp does.  Back-pressure: while the transport's write
buffer is over its high-water mark, reading is paused, so a client that
pipelines requests and does not read cannot make the origin buffer more
than one round of answers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Final

import httptools
from aiohttp.http import SERVER_SOFTWARE
from cachetools import LRUCache

from origin.app import EXPOSED_HEADERS
from origin.cache import CachedObject, HotCache
from origin.metrics import Metrics
from origin.settings import Settings

# Request headers that change the answer (or the framing): such a request goes
# to aiohttp.  Lower case, as compared.
_HANDED_OVER_HEADERS: Final = frozenset(
    {
        b"range",
        b"if-range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"cmcd-request",
        b"cmcd-object",
        b"cmcd-status",
        b"cmcd-session",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
    }
)
_TOKEN_PATH: Final = b"/t/"  # a signed-URL prefix (origin/auth.py): aiohttp strips or checks it
_SEGMENT_SUFFIXES: Final = (".m4s", ".mp4")
# Rendered heads kept per key (an entry is ~400 bytes; rebuilt when the cached
# object changes, e.g. after a repackage).
_HEADS_KEPT: Final = 4096
# Answers queued per round before the transport is asked to take them: a client
# pipelining thousands of requests in one read costs at most this much at once.
_ROUND_BYTES: Final = 1 << 20
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


def _unsent(pieces: list[bytes], sent_bytes: int) -> list[bytes | memoryview]:
    """What is left of ``pieces`` after the first ``sent_bytes`` went out."""
    for index, piece in enumerate(pieces):
        if sent_bytes < len(piece):
            return [memoryview(piece)[sent_bytes:], *pieces[index + 1 :]]
        sent_bytes -= len(piece)
    return []


class _Head:
    """httptools callbacks for one request head."""

    __slots__ = ("complete", "fields", "handed_over", "url")

    def __init__(self) -> None:
        self.url = b""
        self.fields = 0
        self.handed_over = False
        self.complete = False

    def on_message_begin(self) -> None:
        self.url = b""
        self.fields = 0
        self.handed_over = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        lowered = name.lower()
        if lowered in _HANDED_OVER_HEADERS or (
            lowered == b"connection" and value.strip().lower() != b"keep-alive"
        ):
            self.handed_over = True

    def on_message_complete(self) -> None:
        self.complete = True


class HotResponder:
    """Answers one complete request head from the hot cache, or says it cannot.

    No I/O: :meth:`answer` returns the bytes to send, or ``None`` for "hand
    this request to aiohttp".
    """

    def __init__(self, cache: HotCache, metrics: Metrics, settings: Settings) -> None:
        self._cache = cache
        self._metrics = metrics
        self.max_head_bytes: Final = settings.max_header_bytes
        self._max_fields = settings.max_headers
        cors = (
            f"Access-Control-Allow-Origin: {settings.cors_allow_origin}\r\n"
            f"Access-Control-Expose-Headers: {EXPOSED_HEADERS}\r\n"
        )
        if settings.cors_allow_origin != "*":
            cors += "Vary: Origin\r\n"
        self._cors = cors
        self._heads: LRUCache[str, tuple[CachedObject, bytes]] = LRUCache(maxsize=_HEADS_KEPT)
        self._head = _Head()
        self._parser = httptools.HttpRequestParser(self._head)
        self._date_s = -1
        self._date_lines = b""
        # Answers not yet in the metrics (counted at the end of the loop turn).
        self._batch_latencies_s: list[float] = []
        self._batch_bytes = 0

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
            return None
        if (
            not state.complete  # it announced a body: the parser waits for it
            or state.handed_over
            or state.fields > self._max_fields
            or self._parser.get_http_version() != "1.1"
        ):
            self._parser = httptools.HttpRequestParser(state)
            return None
        return state

    def answer(self, head: bytes) -> tuple[bytes, bytes | None] | None:
        """(head bytes, body or None for HEAD) for a request this path may answer."""
        started = time.perf_counter()
        if len(head) > self.max_head_bytes or not head.startswith((b"GET /", b"HEAD /")):
            return None
        state = self._parse(head)
        if state is None:
            return None
        url = state.url
        if url.startswith(_TOKEN_PATH):
            return None
        # Query strings, percent-encoding and odd characters never match: cached
        # keys are what origin.paths.safe_key returns, [A-Za-z0-9._-] and '/'.
        key = url[1:].decode("latin-1")
        if not key.endswith(_SEGMENT_SUFFIXES):
            return None
        obj = self._cache.hot(key)
        if obj is None:
            return None
        entry = self._heads.get(key)
        if entry is None or entry[0] is not obj:
            entry = (obj, self._render_head(obj))
            self._heads[key] = entry
        is_get = self._parser.get_method() == b"GET"
        if not self._batch_latencies_s:
            asyncio.get_running_loop().call_soon(self._count_batch)
        if is_get:
            self._batch_bytes += obj.size_bytes
        self._batch_latencies_s.append(time.perf_counter() - started)
        return entry[1] + self._tail(), obj.body if is_get else None

    def _count_batch(self) -> None:
        """The metrics of this loop turn's answers, in one go: per answer, each
        counter increment costs as much as a tenth of the answer itself (a
        locked, and with ``--workers`` memory-mapped, write)."""
        latencies_s = self._batch_latencies_s
        self._batch_latencies_s = []
        length_bytes, self._batch_bytes = self._batch_bytes, 0
        self._metrics.hits_done("segment", len(latencies_s), length_bytes, latencies_s)

    def _render_head(self, obj: CachedObject) -> bytes:
        # The order and spelling of origin.app.respond_with_object, then the
        # CORS lines of edge_middleware, then what aiohttp adds.
        return (
            "HTTP/1.1 200 OK\r\n"
            f"Content-Type: {obj.content_type}\r\n"
            f"Cache-Control: {obj.cache_control}\r\n"
            f"ETag: {obj.etag}\r\n"
            f"Last-Modified: {obj.last_modified}\r\n"
            "Accept-Ranges: bytes\r\n"
            "X-Cadenza-Cache: hit\r\n"
            f"{self._cors}"
            f"Content-Length: {obj.size_bytes}\r\n"
        ).encode("latin-1")


class FastPathProtocol(asyncio.Protocol):
    """One connection: answered here while every request is a hot segment; at
    the first that is not, handed (with its unanswered bytes) to ``fallback()``."""

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
        self._fd = -1
        self._buffer = b""
        self._last_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._eof = False

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = transport.get_extra_info("peername")
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
        self._answer_buffered()

    def _answer_buffered(self) -> None:
        """Answer the complete heads buffered, a round of at most ``_ROUND_BYTES``
        at a time, while the transport takes them; hand over at the first that
        this path cannot answer."""
        responder = self._responder
        while self._transport is not None and not self._write_paused:
            transport = self._transport
            buffer = self._buffer
            out: list[bytes] = []
            size = 0
            start = 0
            while size < _ROUND_BYTES:
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    break
                answer = responder.answer(buffer[start : end + 4])
                if answer is None:
                    self._hand_over(out, buffer[start:])
                    return
                out.append(answer[0])
                size += len(answer[0])
                if answer[1] is not None:
                    out.append(answer[1])
                    size += len(answer[1])
                start = end + 4
            rest = buffer[start:] if start else buffer
            if size < _ROUND_BYTES and (len(rest) > responder.max_head_bytes or b"\n\n" in rest):
                self._hand_over(out, rest)  # aiohttp gives its verdict (431, 400, ...)
                return
            self._buffer = rest
            if out:
                self._last_s = asyncio.get_running_loop().time()
                self._send(transport, out)  # may call pause_writing at once
            if size < _ROUND_BYTES:
                break  # every complete head is answered
        if self._eof and self._transport is not None and not self._write_paused:
            self._transport.close()

    def eof_received(self) -> bool | None:
        if self._write_paused and self._buffer:
            self._eof = True  # answer what is buffered first, then close
            return True
        return None  # every complete request is answered: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None:
            if not self._eof:
                self._transport.resume_reading()
            self._answer_buffered()

    # -- the rest -----------------------------------------------------------
    def close(self) -> None:
        """Graceful shutdown: everything asked was answered, so close at once
        (the transport still sends what it buffered)."""
        if self._transport is not None:
            self._transport.close()

    def _send(self, transport: asyncio.Transport, pieces: list[bytes]) -> None:
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

    def _hand_over(self, answered: list[bytes], pending: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if answered:
            self._send(transport, answered)  # ahead of anything aiohttp writes
        self._forget()
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._write_paused:
            # aiohttp must know the buffer is full; it will see resume_writing.
            transport.resume_reading()
            handler.pause_writing()
        if pending:
            handler.data_received(pending)
        if self._eof:
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
        if loop.time() >= deadline:
            self._transport.close()
            self._forget()
        else:
            self._timer = loop.call_at(deadline, self._check_idle)
