"""Origin fixtures: a packaged track on disk, the same track in a real S3 API
(moto in server mode on loopback), a real redis-server on loopback, and
aiohttp test clients over either storage."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from cadenza.manifests.ladder import PRESETS
from cadenza.origin.app import create_app
from cadenza.origin.settings import Settings
from cadenza.packager.track import PackageOptions, package_track
from tests.conftest import MakeInput, Moto, free_port

__all__ = ["Moto", "free_port"]  # imported from here by the origin tests

BUCKET = "cadenza-test"
PREFIX = "catalogue"
TRACK = "track"


@pytest.fixture(scope="session")
def packaged_root(make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packaged track (lossy ladder plus FLAC) under ROOT/track/."""
    root = tmp_path_factory.mktemp("root")
    result = package_track(
        make_input("flac", 44100, 2, 9.0, name=TRACK), root, PackageOptions(PRESETS["music"])
    )
    assert result.status == "packaged", result.error
    return root


@pytest.fixture(scope="session")
def moto(packaged_root: Path) -> Iterator[Moto]:
    server = Moto()
    server.start()
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(packaged_root.rglob("*")):
        if path.is_file():
            key = f"{PREFIX}/{path.relative_to(packaged_root).as_posix()}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    try:
        yield server
    finally:
        server.stop()


MakeClient = Callable[..., Any]


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_client(
    packaged_root: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """``await make_client(backend, **settings)`` -> a started aiohttp TestClient."""
    clients: list[TestClient[Any, Any]] = []

    async def make(kind: str = "local", **overrides: Any) -> TestClient[Any, Any]:
        if kind == "s3":
            moto: Moto = request.getfixturevalue("moto")
            settings = Settings(
                root=f"s3://{BUCKET}/{PREFIX}",
                s3_endpoint_url=moto.url,
                storage_timeout_s=1.0,
                retry_after_s=3,
                **overrides,
            )
        else:
            settings = Settings(**{"root": str(packaged_root), **overrides})
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


REDIS_MISSING = (
    "redis-server is not installed: the Redis store tests need a real one. "
    "`make system-deps` (run by `make test`) installs the Debian package redis-server."
)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence, in a
    temporary folder; tests can kill it and start it again on the same port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
        if binary is None:
            pytest.fail(REDIS_MISSING, pytrace=False)
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        log_file = self.folder / "redis.log"
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",  # no snapshots, no append-only file: a restart starts empty
            "appendonly": "no",
            "dir": str(self.folder),
            "logfile": str(log_file),
            "daemonize": "no",
        }
        self.process = subprocess.Popen(
            [
                self.binary,
                *(arg for name, value in options.items() for arg in (f"--{name}", value)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        with redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            while True:  # bounded: the deadline, or the server's exit
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                exited = self.process.poll() is not None
                if exited or time.monotonic() > deadline:
                    log = log_file.read_text(errors="replace") if log_file.exists() else ""
                    self.stop()
                    pytest.fail(f"redis-server on port {self.port} did not start:\n{log[-2000:]}")
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill it at once (SIGKILL): an outage, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        """A plain synchronous client, for tests to look inside."""
        return redis.Redis(port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A started redis-server of its own for each test (an empty store every time)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
