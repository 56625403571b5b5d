"""``cadenza serve ROOT``: run the origin, in one process or N sharing the port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cadenza.origin.app import create_app
from cadenza.origin.errors import SettingsError
from cadenza.origin.keys import METRICS, SETTINGS
from cadenza.origin.settings import Settings, load_settings
from cadenza.origin.transport.fast import FastPathProtocol
from cadenza.origin.transport.responder import HotResponder

log = logging.getLogger("cadenza.origin.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root", nargs="?", help="folder written by `cadenza package`, or s3://bucket/prefix"
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    parser.add_argument("--config", type=Path, help="TOML settings file (see docs/operating.md)")


# The most of a malformed request's parser message that is logged.
_LOGGED_ERROR_CHARS: Final = 120


class RequestErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, with a request that does not parse (a client's
    doing, not the origin's) logged as one INFO line without a traceback, so
    a client cannot fill the log; any other exception is logged in full."""

    def exception(self, msg: object, *args: object, **kwargs: object) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            remote = args[0] if args else None
            detail = " ".join(str(error.message).split())[:_LOGGED_ERROR_CHARS]
            self.logger.info("malformed request from %s: %d %s", remote, error.code, detail)
            return
        self.logger.exception(msg, *args, **kwargs)  # type: ignore[arg-type]


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
        if self._fast_path:
            app = self._app
            responder = HotResponder(app)
            keepalive_s = app[SETTINGS].keepalive_timeout_s

        def protocol() -> asyncio.BaseProtocol:
            if limit and len(server.connections) + len(fast) >= limit:
                self._on_refused()
                return _Refuse()
            if responder is not None:
                return FastPathProtocol(responder, server, fast, keepalive_s)
            return server()

        self._server = self._listener = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
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


def _raise_open_files_limit(wanted: int) -> None:
    """Each connection is a file descriptor: make room for ``max_connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < wanted:
            log.warning(
                "open files limit %d is below max_connections + 64 (%d): raise it "
                "(ulimit -n) or lower CADENZA_MAX_CONNECTIONS",
                soft,
                wanted,
            )


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner with the request-head limits and timeouts of the settings."""
    return web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=settings.keepalive_timeout_s,
        shutdown_timeout=settings.shutdown_timeout_s,
        max_line_size=settings.max_header_bytes,
        max_field_size=settings.max_header_bytes,
        max_headers=settings.max_headers,
        logger=RequestErrorLog(logging.getLogger("aiohttp.server")),
    )


def make_site(
    runner: web.AppRunner, settings: Settings, *, reuse_port: bool = False
) -> GuardedSite:
    return GuardedSite(
        runner,
        settings.host,
        settings.port,
        reuse_port=reuse_port,
        max_connections=settings.max_connections,
        send_timeout_s=settings.send_timeout_s,
        on_refused=runner.app[METRICS].connections_refused.inc,
        fast_path=settings.fast_path and not settings.signing_keys,
    )


async def serve_until_signalled(settings: Settings, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully: stop listening
    (new connections are refused), close idle keep-alive connections, let
    in-flight responses finish for up to ``shutdown_timeout_s``."""
    app = create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    site = make_site(runner, settings, reuse_port=reuse_port)
    try:
        await site.start()
        await stop.wait()
        log.info(
            "signalled: draining in-flight responses (up to %g s)", settings.shutdown_timeout_s
        )
    finally:
        deadline_s = loop.time() + settings.shutdown_timeout_s
        transports = site.open_transports()
        await runner.cleanup()
        await flush_transports(transports, deadline_s)


async def flush_transports(
    transports: list[asyncio.BaseTransport], deadline_s: float, poll_s: float = 0.02
) -> None:
    """Wait, until the loop's ``deadline_s``, for the bytes asyncio still holds for
    these connections to reach the kernel.  A handler that has written its last bytes
    has finished, so the runner's cleanup closes its transport with up to a
    high-water mark of the response still in asyncio's buffer: ending the loop then
    would drop it, and the client would get a response short of its Content-Length."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline_s and any(_unflushed(t) for t in transports):
        await asyncio.sleep(poll_s)


def _unflushed(transport: asyncio.BaseTransport) -> bool:
    if not isinstance(transport, asyncio.WriteTransport):
        return False
    return not transport.is_closing() or transport.get_write_buffer_size() > 0


def _serve(settings: Settings, reuse_port: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.max_connections:
        _raise_open_files_limit(settings.max_connections + 64)
    asyncio.run(serve_until_signalled(settings, reuse_port))


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            {"root": args.root, "host": args.host, "port": args.port, "workers": args.workers},
            config_file=args.config,
        )
    except SettingsError as exc:
        print(f"cadenza serve: {exc}", file=sys.stderr)
        return 2
    if not settings.is_s3 and not Path(settings.root).is_dir():
        print(f"cadenza serve: {settings.root} is not a directory", file=sys.stderr)
        return 2
    print(
        f"cadenza serve: serving {settings.root} at http://{settings.host}:{settings.port}/",
        file=sys.stderr,
        flush=True,
    )
    if settings.workers == 1:
        _serve(settings, reuse_port=False)
        return 0
    # N processes on one port (SO_REUSEPORT); metrics aggregate through a shared folder.
    with tempfile.TemporaryDirectory(prefix="cadenza-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_serve, args=(settings, True), daemon=True)
            for _ in range(settings.workers)
        ]
        for worker in workers:
            worker.start()

        def stop(_signum: int, _frame: object) -> None:
            for worker in workers:
                if worker.pid is not None:
                    os.kill(worker.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for worker in workers:
            worker.join()
    return 0
