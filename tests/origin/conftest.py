"""Origin fixtures: a packaged track on disk, the same track in a real S3 API
(moto in server mode on loopback), and aiohttp test clients over either."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp.test_utils import TestClient, TestServer
from moto.server import ThreadedMotoServer

from origin.app import create_app
from origin.settings import Settings
from packager.ladder import PRESETS
from packager.track import PackageOptions, package_track
from tests.conftest import MakeInput

BUCKET = "cadenza-test"
PREFIX = "catalogue"
TRACK = "track"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def packaged_root(make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packaged track (lossy ladder plus FLAC) under ROOT/track/."""
    root = tmp_path_factory.mktemp("root")
    result = package_track(
        make_input("flac", 44100, 2, 9.0, name=TRACK), root, PackageOptions(PRESETS["music"])
    )
    assert result.status == "packaged", result.error
    return root


class Moto:
    """A moto S3 server on a loopback port that tests can stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def moto(packaged_root: Path) -> Iterator[Moto]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
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
            settings = Settings(root=str(packaged_root), **overrides)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
