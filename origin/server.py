"""``cadenza serve ROOT``: run the origin, in one process or N sharing the port
(supervised: :mod:`cadenza.origin.supervisor`).

A port that cannot be bound (taken, not this machine's address, privileged)
is one line on stderr and exit status 2, before any worker starts."""

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
from pathlib import Path

from aiohttp import web
from prometheus_client import multiprocess

from cadenza.origin.access_log import access_log_for, aiohttp_access_logger
from cadenza.origin.app import create_app
from cadenza.origin.errors import SettingsError
from cadenza.origin.keys import METRICS
from cadenza.origin.lifecycle import ListenError, WrapStorage
from cadenza.origin.logs import LogFormat, RequestErrorLog, configure_logging, flush_logs
from cadenza.origin.proxies import TrustedProxies
from cadenza.origin.settings import LOG_LEVELS, Settings, load_settings
from cadenza.origin.site import GuardedSite, listen_reason
from cadenza.origin.supervisor import EXIT_CANNOT_LISTEN, supervise

log = logging.getLogger("cadenza.origin.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root", nargs="?", help="folder written by `cadenza package`, or s3://bucket/prefix"
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    parser.add_argument("--config", type=Path, help="TOML settings file (see docs/operating.md)")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="least severe log line written (default info)"
    )
    parser.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        help="text, or json: one object a line (default text)",
    )


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
    """The runner with the request-head limits and timeouts of the settings,
    and the access log (:mod:`cadenza.origin.access_log`) when it is on."""
    access = access_log_for(settings.access_log)
    logs: dict[str, object] = (
        {"access_log": None}
        if access is None
        else {"access_log": access.logger, "access_log_class": aiohttp_access_logger(access)}
    )
    return web.AppRunner(
        app,
        **logs,  # type: ignore[arg-type]
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
        trusted=TrustedProxies.of(settings.trusted_proxies),
        access=access_log_for(settings.access_log),
    )


async def serve_until_signalled(
    settings: Settings, reuse_port: bool, wrap_storage: WrapStorage | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully: stop listening
    (new connections are refused), close idle keep-alive connections, let
    in-flight responses finish for up to ``shutdown_timeout_s``."""
    app = create_app(settings, wrap_storage=wrap_storage)
    runner = make_runner(app, settings)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    site = make_site(runner, settings, reuse_port=reuse_port)
    try:
        await site.start()
        log.info("serving %s at http://%s:%d/", settings.root, settings.host, site.port)
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


def _serve(settings: Settings, reuse_port: bool, wrap_storage: WrapStorage | None = None) -> None:
    """One origin process (the only one, or a worker): exits with
    :data:`EXIT_CANNOT_LISTEN` when its port cannot be bound.  ``wrap_storage``: a
    module-level function (it travels to spawned workers), see ``create_app``."""
    configure_logging(settings.log_level, settings.log_format)
    if settings.max_connections:
        _raise_open_files_limit(settings.max_connections + 64)
    try:
        asyncio.run(serve_until_signalled(settings, reuse_port, wrap_storage))
    except ListenError as exc:
        flush_logs()
        print(f"cadenza serve: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CANNOT_LISTEN)
    finally:
        flush_logs()  # the last turn's lines (access lines are written per loop turn)


def check_listen(host: str, port: int) -> None:
    """Bind the address as a worker will (``SO_REUSEPORT``) and let it go: a
    port that is taken or an address that is not this machine's fails here,
    before any worker starts (:class:`ListenError`).  Another origin sharing
    the port with ``SO_REUSEPORT`` as the same user passes: the kernel lets
    both listen."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(host, port, listen_reason(exc)) from exc
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ListenError(host, port, listen_reason(exc)) from exc


def run(args: argparse.Namespace, wrap_storage: WrapStorage | None = None) -> int:
    """``cadenza serve``; ``wrap_storage`` as ``create_app``'s (``cadenza serve
    --sources`` passes the just-in-time store's)."""
    try:
        settings = load_settings(
            {
                "root": args.root,
                "host": args.host,
                "port": args.port,
                "workers": args.workers,
                "log_level": args.log_level,
                "log_format": args.log_format,
            },
            config_file=args.config,
        )
    except SettingsError as exc:
        print(f"cadenza serve: {exc}", file=sys.stderr)
        return 2
    if not settings.is_s3 and not Path(settings.root).is_dir():
        print(f"cadenza serve: {settings.root} is not a directory", file=sys.stderr)
        return 2
    if settings.workers == 1:
        _serve(settings, reuse_port=False, wrap_storage=wrap_storage)
        return 0
    try:
        check_listen(settings.host, settings.port)
    except ListenError as exc:
        print(f"cadenza serve: {exc}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_LISTEN
    configure_logging(settings.log_level, settings.log_format)
    # N processes on one port (SO_REUSEPORT); metrics aggregate through a shared folder.
    with tempfile.TemporaryDirectory(prefix="cadenza-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        context = multiprocessing.get_context("spawn")

        def start_worker() -> multiprocessing.process.BaseProcess:
            worker = context.Process(
                target=_serve, args=(settings, True, wrap_storage), daemon=True
            )
            worker.start()
            return worker

        def forget(pid: int) -> None:
            multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]

        return supervise(
            start_worker,
            settings.workers,
            stop_timeout_s=settings.shutdown_timeout_s + 5,
            on_death=forget,
        )
