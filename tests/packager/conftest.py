"""S3 for the packager's tests: moto in server mode on loopback, a fresh bucket per
test, and an HTTP proxy in front of moto that logs every request (arrival and
answer order) and can answer chosen ones with an error instead of passing them on.

The proxy runs its own event loop on its own thread, so it serves this process
and the processes the packager starts (forked children, Dask workers) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web

from tests.conftest import Moto, free_port

# Headers that belong to one hop, not to the request or answer being passed on.
_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "expect",
        "date",
        "server",
    }
)
# The S3 error code the proxy answers a fault status with.
_CODES = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown"}


@dataclass(slots=True)
class Logged:
    method: str
    path: str  # /bucket/key, unquoted
    query: str
    arrived: int  # order of arrival among all requests
    answered: int = -1  # order of the answer (-1: none yet)
    status: int = 0

    @property
    def key(self) -> str:
        return self.path.split("/", 2)[2] if self.path.count("/") >= 2 else ""


# (method, path, query) -> an HTTP status to answer instead of passing the request on
Fault = Callable[[str, str, str], int | None]


class S3Proxy:
    """A logging, fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[Logged] = []
        self.fault: Fault = lambda method, path, query: None
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _next(self) -> int:
        with self._lock:
            return next(self._order)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry = Logged(request.method, request.path, request.query_string, self._next())
        with self._lock:
            self.log.append(entry)
        status = self.fault(request.method, request.path, request.query_string)
        if status is not None:
            entry.status, entry.answered = status, self._next()
            error = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{_CODES.get(status, 'InternalError')}</Code>"
                "<Message>from the test proxy</Message><RequestId>proxy</RequestId></Error>"
            )
            return web.Response(status=status, text=error, content_type="application/xml")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            skip_auto_headers=("Content-Type",),
        ) as answer:
            data = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            entry.status, entry.answered = answer.status, self._next()
            return web.Response(status=answer.status, body=data, headers=out)

    def puts(self) -> list[Logged]:
        """Successful PUTs (whole objects and parts), in answer order."""
        with self._lock:
            done = [e for e in self.log if e.method == "PUT" and 200 <= e.status < 300]
        return sorted(done, key=lambda e: e.answered)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    server = Moto()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: Moto) -> str:
    """A new, empty bucket on the moto server."""
    name = f"cadenza-{uuid.uuid4().hex[:12]}"
    s3_client(moto_server.url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_proxy(moto_server: Moto) -> Iterator[S3Proxy]:
    proxy = S3Proxy(moto_server.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def s3_client(endpoint_url: str) -> Any:
    """A plain synchronous boto3 client, for tests to look inside the bucket."""
    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")


def list_keys(endpoint_url: str, bucket: str, prefix: str = "") -> list[str]:
    client = s3_client(endpoint_url)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [str(o["Key"]) for o in page.get("Contents", [])]
    return sorted(keys)


def scheduler_task_prefixes(address: str) -> list[str]:
    """Task name prefixes a Dask scheduler has seen: proof that work ran there."""
    from distributed import Client

    def prefixes(dask_scheduler: Any) -> list[str]:
        return sorted(dask_scheduler.task_prefixes)

    with Client(address, set_as_default=False) as client:
        found: list[str] = client.run_on_scheduler(prefixes)
        return found


@contextlib.contextmanager
def local_cluster() -> Iterator[str]:
    """A real Dask LocalCluster on loopback (two worker processes, the same scheduler
    and workers as in production); yields the scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield str(cluster.scheduler_address)
