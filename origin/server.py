"""``cadenza serve ROOT``: run the origin, in one process or N sharing the port."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from origin.app import create_app
from origin.errors import SettingsError
from origin.settings import Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root", nargs="?", help="folder written by `cadenza package`, or s3://bucket/prefix"
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    parser.add_argument("--config", type=Path, help="TOML settings file (see README)")


def _serve(settings: Settings, reuse_port: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
    )


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
