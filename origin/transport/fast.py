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
path loads it; the connection waits for it, then goes on.  A load that
never waits (a decided segment, sessions in this process) is answered in the
same round as a hit, with no task (``transport/eager.py``).

What this path answers and what it hands over: the package's docstring
(:mod:`cadenza.origin.transport`).

Request heads are parsed by httptools (llhttp), one complete head at a time, so
the framing and the handover point are always exact.  Why this path exists, with
the measurements: docs/architecture.md, "A request, from socket to answer".

Keep-alive: a connection with nothing answered for ``keepalive_timeout_s``
is closed, as aiohttp does.  Back-pressure: while the transport's write
buffer is over its high-water mark, or a load is pending and 64 KiB are read
ahead, reading is paused, so a client that pipelines requests and does not
read cannot make the origin queue more than one round (:data:`ROUND_BYTES`)
past the transport's high-water mark (:data:`QUEUED_HIGH_BYTES`).  Each
connection has its own parser.

Each answer is an access-log line (:mod:`cadenza.origin.access_log`) when the
log is on; on a connection from a trusted proxy (:mod:`cadenza.origin.proxies`)
the client is the address its ``X-Forwarded-For`` or ``Forwarded`` names.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

from cadenza.origin.access_log import AccessLog
from cadenza.origin.core.request import Handover, MediaRequest
from cadenza.origin.proxies import TrustedProxies, client_address
from cadenza.origin.tcp_info import Connection, connection_of
from cadenza.origin.transport import eager
from cadenza.origin.transport.cutover import cut_over
from cadenza.origin.transport.parse import HeadParser
from cadenza.origin.transport.responder import Answer, HotResponder
from cadenza.origin.transport.writev import send_pieces

log = logging.getLogger("cadenza.origin.fastpath")

# Answers gathered per round before the transport is asked to take them (a
# round ends after the answer that reaches this), and the transport's
# high-water mark (over it, answering and reading pause): what a connection
# queues is at most one round past this mark, so a client pipelining
# thousands of requests and never reading costs no more than on aiohttp's
# path (one answer in flight past aiohttp's 64 KiB mark).
ROUND_BYTES: Final = 16 * 1024
QUEUED_HIGH_BYTES: Final = 16 * 1024
# Bytes read ahead while a request waits for a load (pipelined requests).
_READ_AHEAD_BYTES: Final = 64 * 1024

# A load started: done on the caller's stack, or waiting (eager.start).
Loading = eager.Done[Answer | None] | eager.Started[Answer | None]


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
        *,
        trusted: TrustedProxies | None = None,
        access: AccessLog | None = None,
    ) -> None:
        self._responder = responder
        # Behind a trusted proxy, its X-Forwarded-For names the client (origin.proxies).
        self._trusted = trusted
        self._trusted_peer = False
        self._access = access  # None: the access log is off
        self._parser: HeadParser | None = None  # this connection's alone, made on first use
        self._fallback = fallback
        self._connections = connections
        self._keepalive_timeout_s = keepalive_timeout_s
        self._transport: asyncio.Transport | None = None
        self.peer: object = None
        self._remote: str | None = None  # as aiohttp's request.remote
        self._connection: Connection | None = None
        self._fd = -1
        self._buffer = b""
        self._last_s = 0.0
        # Kept: asyncio.get_running_loop() is a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._eof = False
        self._close_when_idle = False
        # While a load is pending: the request's head (handed to aiohttp if the
        # load fails) and the task (awaited by a graceful shutdown).
        self._loading_head: bytes | None = None
        self.loading: asyncio.Task[None] | None = None

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport while this protocol owns it (not after a handover)."""
        return self._transport

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=QUEUED_HIGH_BYTES)
        self.peer = transport.get_extra_info("peername")
        if isinstance(self.peer, (list, tuple)):
            self._remote = str(self.peer[0])
        elif self.peer is not None:
            self._remote = str(self.peer)
        self._trusted_peer = self._trusted is not None and self._trusted.trusts(self._remote)
        sock = transport.get_extra_info("socket")
        self._connection = connection_of(self.peer, sock)
        self._fd = sock.fileno() if sock is not None else -1
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp does
        self._connections.add(self)
        loop = self._loop
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
        """Answer the complete heads buffered, a round of at most ``ROUND_BYTES``
        at a time, while the transport takes them; start a load, or hand over at
        the first that this path cannot answer."""
        responder = self._responder
        parser = self._parser
        if parser is None:
            parser = self._parser = HeadParser(responder.max_fields)
        while self._transport is not None and not self._write_paused and self._loading_head is None:
            transport = self._transport
            buffer = self._buffer
            out: list[bytes | memoryview] = []
            size = 0
            start = 0
            while size < ROUND_BYTES:
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    break
                began_s = 0.0 if self._access is None else time.perf_counter()
                try:
                    answer = responder.answer(
                        buffer[start : end + 4], parser, self._remote, self._connection
                    )
                except Exception:  # a bug: aiohttp answers it, the connection lives on
                    log.exception("fast path could not answer a request; handed to aiohttp")
                    answer, responder.refusal = None, Handover.ERROR
                if answer is None:
                    self._hand_over(out, buffer[start:], responder.refusal)
                    return
                if isinstance(answer, MediaRequest):
                    if self._trusted_peer:
                        answer = replace(answer, remote=self._client(parser))
                    head = buffer[start : end + 4]
                    started = self._start_load(answer, head)
                    loaded = started.value if isinstance(started, eager.Done) else None
                    if loaded is None or self._close_when_idle:
                        self._buffer = buffer[end + 4 :]
                        self._send_round(transport, out)
                        self._go_on_loading(answer, started)
                        return
                    # Answered on this stack: in this round, as a hit is.
                    self._loading_head = None
                    answer = loaded
                out.append(answer[0])
                size += len(answer[0])
                if answer[1] is not None:
                    out.append(answer[1])
                    size += len(answer[1])
                if self._access is not None:
                    self._log(buffer[start : end + 4], answer, parser, began_s)
                start = end + 4
            rest = buffer[start:] if start else buffer
            if size < ROUND_BYTES and len(rest) > responder.max_head_bytes:
                self._hand_over(out, rest, Handover.OVERSIZED)  # aiohttp's verdict: 431 or 400
                return
            if size < ROUND_BYTES and b"\n\n" in rest:
                self._hand_over(out, rest, Handover.MALFORMED)  # not CRLF-framed
                return
            self._buffer = rest
            self._send_round(transport, out)  # may call pause_writing at once
            if size < ROUND_BYTES:
                break  # every complete head is answered
        idle = not self._write_paused and self._loading_head is None
        if self._transport is not None and idle and self._eof:
            self._transport.close()  # the client had finished sending: all answered

    def _send_round(self, transport: asyncio.Transport, out: list[bytes | memoryview]) -> None:
        if out:
            self._last_s = self._loop.time()
            self._send(transport, out)

    def _start_load(self, request: MediaRequest, head: bytes) -> Loading:
        """Run the load of ``request`` until it finishes (a decided segment, with
        sessions in this process) or first waits; one that raised has no answer."""
        self._loading_head = head
        try:
            return eager.start(self._responder.load(request))
        except Exception:
            self._load_failed(request)
            return eager.Done(None)

    def _go_on_loading(self, request: MediaRequest, started: Loading) -> None:
        """A load this round does not answer: one that waits goes on in a task (the
        connection answers again once it is sent); one done without an answer hands
        the connection over, and one done while shutting down is sent, then closes."""
        if isinstance(started, eager.Done):
            self._loaded(request, started.value)
            return
        self._update_reading()  # waiting: pause reading past the read-ahead
        self.loading = self._loop.create_task(self._load(request, started))

    def _load_failed(self, request: MediaRequest) -> None:
        # A bug, or a session store failing past its fallback: aiohttp
        # answers it (its 500 or 503), so the connection never hangs; a
        # session's CMCD may then be folded in a second time.
        log.exception("fast path could not answer /%s; handed to aiohttp", request.key)
        self._responder.refusal = Handover.ERROR

    async def _load(self, request: MediaRequest, started: eager.Started[Answer | None]) -> None:
        try:
            answer = await started
        except Exception:
            self._load_failed(request)
            answer = None
        finally:
            self.loading = None
        if self._loaded(request, answer):
            self._update_reading()
            self._answer_buffered()

    def _loaded(self, request: MediaRequest, answer: Answer | None) -> bool:
        """Send the answer to the request loaded (or hand the connection over
        when there is none); True when the connection goes on answering."""
        responder = self._responder
        head, self._loading_head = self._loading_head, None
        transport = self._transport
        if transport is None or head is None:
            return False  # the client went away meanwhile
        if answer is None:
            self._hand_over([], head + self._buffer, responder.refusal)
            return False
        self._send_round(transport, [answer[0]] if answer[1] is None else [answer[0], answer[1]])
        access = self._access
        if access is not None:
            body_bytes = 0 if answer[1] is None else len(answer[1])
            duration_s = time.perf_counter() - request.started_s
            access.fast(head, answer[0], body_bytes, request.remote, duration_s)
        if self._close_when_idle:
            transport.close()  # shutting down: this answer was in flight, the rest is not
            return False
        return True

    def _send(self, transport: asyncio.Transport, pieces: Sequence[bytes | memoryview]) -> None:
        send_pieces(transport, self._fd, pieces)  # one writev, no copy (.writev)

    def _client(self, parser: HeadParser) -> str | None:
        """The client's address: the peer's, or behind a trusted proxy the one
        its forwarding fields name."""
        fields = parser.fields
        return client_address(self._remote, fields.x_forwarded_for, fields.forwarded, self._trusted)

    def _log(
        self,
        head: bytes,
        answer: tuple[bytes, bytes | memoryview | None],
        parser: HeadParser,
        began_s: float,
    ) -> None:
        assert self._access is not None
        client = self._client(parser) if self._trusted_peer else self._remote
        body_bytes = 0 if answer[1] is None else len(answer[1])
        self._access.fast(head, answer[0], body_bytes, client, time.perf_counter() - began_s)

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
        cut_over(transport, self._fallback(), pending, write_paused=write_paused, eof=eof)

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
