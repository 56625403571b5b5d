"""The origin's listening socket: :class:`GuardedSite`, aiohttp's TCP site with
a connection limit, a send timeout, the fast transport, and a listen that
fails as one :class:`cadenza.origin.lifecycle.ListenError`."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Final

from aiohttp import web

from cadenza.origin.access_log import AccessLog
from cadenza.origin.keys import SETTINGS
from cadenza.origin.lifecycle import ListenError
from cadenza.origin.proxies import TrustedProxies
from cadenza.origin.transport.fast import FastPathProtocol
from cadenza.origin.transport.responder import HotResponder

REFUSE_LINGER_S: Final = 1.0
# Sent, unasked, to a connection over ``max_connections``, which is then closed.
_OVER_CAPACITY_BODY: Final = (
    b'{"error": "over_capacity", "detail": "too many open connections; retry shortly"}'
)
OVER_CAPACITY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_OVER_CAPACITY_BODY), _OVER_CAPACITY_BODY)
)


class _Refuse(asyncio.Protocol):
    """Over capacity: the 503, a FIN, then whatever the client sends is discarded
    for at most a second (closing with its request unread would reset the
    connection, and the client might never see the 503)."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(OVER_CAPACITY)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class GuardedSite(web.BaseSite):
    """A TCP site with the protections aiohttp's ``TCPSite`` lacks.

    - At most ``max_connections`` open connections (0: no limit); one more is
      answered ``503`` and closed at once, and counted.
    - ``TCP_USER_TIMEOUT`` (Linux) on the listening socket, which accepted
      sockets inherit: a client that stops reading (zero window) or vanishes
      is dropped ``send_timeout_s`` after the last byte it acknowledged, so a
      response nobody reads holds neither a handler nor its buffers for ever.

    Slowloris senders are closed by aiohttp's keep-alive timer, which runs
    from the connection's start (and from each response's end) until a whole
    request head has arrived: ``keepalive_timeout_s``.

    With ``fast_path`` (and no URL signing, whose tokens only the full path
    checks), connections start on :class:`cadenza.origin.transport.fast.FastPathProtocol`,
    which answers hot segments itself and hands anything else to aiohttp.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        reuse_port: bool,
        max_connections: int,
        send_timeout_s: float,
        on_refused: Callable[[], None],
        fast_path: bool = False,
        trusted: TrustedProxies | None = None,
        access: AccessLog | None = None,
    ) -> None:
        super().__init__(runner, backlog=1024)
        self._app = runner.app
        self._fast_path = fast_path
        self._fast_connections: set[FastPathProtocol] = set()
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._max_connections = max_connections
        self._send_timeout_s = send_timeout_s
        self._on_refused = on_refused
        self._trusted = trusted
        self._access = access
        self._listener: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the kernel's pick for port 0)."""
        if self._listener is not None and self._listener.sockets:
            port: int = self._listener.sockets[0].getsockname()[1]
            return port
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        limit = self._max_connections
        fast = self._fast_connections
        responder: HotResponder | None = None
        keepalive_s = 0.0
        trusted, access = self._trusted, self._access
        if self._fast_path:
            app = self._app
            responder = HotResponder(app)
            keepalive_s = app[SETTINGS].keepalive_timeout_s

        def protocol() -> asyncio.BaseProtocol:
            if limit and len(server.connections) + len(fast) >= limit:
                self._on_refused()
                return _Refuse()
            if responder is not None:
                return FastPathProtocol(
                    responder, server, fast, keepalive_s, trusted=trusted, access=access
                )
            return server()

        try:
            self._server = self._listener = await asyncio.get_running_loop().create_server(
                protocol,
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_address=True,
                reuse_port=self._reuse_port or None,
            )
        except OSError as exc:
            raise ListenError(self._host, self._port, listen_reason(exc)) from exc
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if user_timeout is not None:
            for sock in self._listener.sockets:
                sock.setsockopt(
                    socket.IPPROTO_TCP, user_timeout, max(1, round(self._send_timeout_s * 1000))
                )

    def fast_peers(self) -> frozenset[object]:
        """The peer addresses of the connections still on the fast path (not yet
        handed to aiohttp).  Call it on the server's loop."""
        return frozenset(c.peer for c in self._fast_connections)

    def open_transports(self) -> list[asyncio.BaseTransport]:
        """Every connection's transport, aiohttp's and the fast path's: snapshot it
        before the runner's cleanup, which forgets aiohttp's connections."""
        server = self._runner.server
        handlers = list(server.connections) if server is not None else []
        found: list[asyncio.BaseTransport] = [
            h.transport for h in handlers if h.transport is not None
        ]
        found += [t for c in self._fast_connections if (t := c.transport) is not None]
        return found

    async def stop(self) -> None:
        """Stop listening; connections still on the fast path close once the
        answer they are loading (if any) is sent, waited for up to
        ``shutdown_timeout_s`` (aiohttp drains its own connections)."""
        await super().stop()
        connections = list(self._fast_connections)
        for connection in connections:
            connection.close()
        loading = [c.loading for c in connections if c.loading is not None]
        if loading:
            await asyncio.wait(loading, timeout=self._app[SETTINGS].shutdown_timeout_s)


def listen_reason(exc: OSError) -> str:
    """``address already in use``: the OS's words, without the errno."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return str(exc.strerror or exc).lower()
    return os.strerror(exc.errno).lower()
