"""A fault-injecting TCP proxy on 127.0.0.1, for putting between the origin and moto.

Modes (switch with :meth:`FaultProxy.set_mode`, on the proxy's event loop):

- ``pass``: bytes relayed both ways untouched.
- ``slow``: every chunk the client sends waits ``slow_delay_s`` before it is
  relayed, on new and already open connections alike: S3 answers, but only
  after the origin's ``storage_timeout_s``.
- ``error``: every request is answered ``500 Internal Server Error`` with an S3
  XML error body (keep-alive, request after request), moto is not asked.
- ``dead``: the listening socket is closed (connections are refused) and open
  connections are reset: S3 killed.
- ``cut``: requests are relayed; each answer's head and at most
  ``CUT_BODY_BYTES`` of its body reach the client, then the connection is
  reset: S3 dropping connections mid-body.

Entering ``error``, ``dead`` or ``cut`` resets every open connection (a server
that turns into something else does not keep its old connections); entering
``pass`` or ``slow`` leaves them be.  Everything is bounded: a relay ends when
either side closes, and :meth:`close` resets whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import Final


class Mode(enum.StrEnum):
    PASS = "pass"
    SLOW = "slow"
    ERROR = "error"
    DEAD = "dead"
    CUT = "cut"


CUT_BODY_BYTES: Final = 16
CHUNK_BYTES: Final = 65536
ERROR_BODY: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>faultproxy</RequestId></Error>"
)
_RESETTING: Final = frozenset({Mode.ERROR, Mode.DEAD, Mode.CUT})


def _error_answer(method: bytes) -> bytes:
    body = b"" if method == b"HEAD" else ERROR_BODY
    head = (
        b"HTTP/1.1 500 Internal Server Error\r\n"
        b"Content-Type: application/xml\r\n"
        b"x-amz-request-id: faultproxy\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or b"0")
    return 0


class FaultProxy:
    """``FaultProxy(upstream_port)``; ``await start()``, then point a client at ``url``."""

    def __init__(self, upstream_port: int, *, slow_delay_s: float = 5.0) -> None:
        self.upstream_port = upstream_port
        self.slow_delay_s = slow_delay_s
        self.mode = Mode.PASS
        self.port = 0
        self.accepted = 0  # connections accepted, in any mode
        self.errors_sent = 0  # 500 answers sent in ``error`` mode
        self.cuts = 0  # answers cut short in ``cut`` mode
        self.delayed = 0  # chunks held back in ``slow`` mode
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: Mode) -> None:
        if mode is self.mode:
            return
        if mode in _RESETTING:
            self._reset_all()
        if mode is Mode.DEAD and self._server is not None:
            self._server.close()
            self._server = None
        self.mode = mode
        if mode is not Mode.DEAD and self._server is None:
            await self.start()  # the same port again

    async def close(self) -> None:
        """Stop listening, reset every connection, and end every handler (one
        may be sleeping in ``slow`` mode)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._reset_all()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def _reset_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._transports.add(writer.transport)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if self.mode is Mode.ERROR:
                await self._answer_errors(reader, writer)
            elif self.mode is not Mode.DEAD:
                await self._relay(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._transports.discard(writer.transport)
            writer.transport.abort()
            if task is not None:
                self._handlers.discard(task)

    async def _answer_errors(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:  # one request after another, until the client closes (IncompleteReadError)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            writer.write(_error_answer(head.split(b" ", 1)[0]))
            await writer.drain()
            self.errors_sent += 1

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._transports.add(up_writer.transport)
        try:
            await asyncio.gather(
                self._requests(reader, up_writer),
                self._answers(up_reader, writer),
                return_exceptions=True,
            )
        finally:
            self._transports.discard(up_writer.transport)
            up_writer.transport.abort()

    async def _requests(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                if self.mode is Mode.SLOW:
                    self.delayed += 1
                    await asyncio.sleep(self.slow_delay_s)
                up_writer.write(data)
                await up_writer.drain()
        finally:
            up_writer.transport.abort()  # the client left: so does the upstream side

    async def _answers(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        try:
            while data := await up_reader.read(CHUNK_BYTES):
                if self.mode is not Mode.CUT:
                    writer.write(data)
                    await writer.drain()
                    continue
                pending += data
                end = pending.find(b"\r\n\r\n")
                if end < 0:
                    continue  # the head is not whole yet
                writer.write(pending[: end + 4 + CUT_BODY_BYTES])
                with contextlib.suppress(OSError):
                    await writer.drain()
                self.cuts += 1
                return
        finally:
            writer.transport.abort()
