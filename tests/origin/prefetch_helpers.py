"""Shared pieces of the prefetch tests: a catalogue of tracks (copies of the
packaged test track under other ids), an origin over it, a player's CMCD
requests, and the prefetch metrics read from ``/metrics``."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from cadenza.origin.app import create_app
from cadenza.origin.prefetch.engine import PREFETCHER, Prefetcher
from cadenza.origin.settings import Settings
from tests.origin.waiting import wait_for_async

TRACKS = ("a", "b", "c", "d")
RUNG = "aac-128k"
Client = TestClient[Any, Any]


@pytest.fixture(scope="session")
def catalogue(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT with the packaged test track under each of :data:`TRACKS` (3 segments each)."""
    root = tmp_path_factory.mktemp("catalogue")
    for track in TRACKS:
        shutil.copytree(packaged_root / "track", root / track)
    return root


MakeOrigin = Callable[..., Any]


@pytest.fixture
async def make_origin(catalogue: Path) -> AsyncIterator[MakeOrigin]:
    """``await make_origin(**settings)``: a started origin over the catalogue."""
    clients: list[Client] = []

    async def make(**overrides: Any) -> Client:
        settings = Settings(**{"root": str(catalogue), **overrides})
        client: Client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def cmcd(sid: str, **members: str) -> str:
    """A ``CMCD`` query value (CTA-5004 text, quoted for a URL)."""
    text = ",".join([f'sid="{sid}"', *(f'{k}="{v}"' for k, v in members.items())])
    return quote(text, safe="")


async def get(client: Client, path: str, sid: str | None = None, **members: str) -> Any:
    """GET ``path`` as a player of session ``sid`` (its CMCD in the query); the
    response, read."""
    url = path if sid is None else f"{path}?CMCD={cmcd(sid, **members)}"
    response = await client.get(url)
    await response.read()
    return response


def segment(track: str, number: int, rung: str = RUNG) -> str:
    return f"/{track}/{rung}/seg-{number:05d}.m4s"


async def play(client: Client, sid: str, track: str, numbers: tuple[int, ...] = (1, 2)) -> None:
    """Session ``sid`` asks for ``track``'s media playlist, init and segments."""
    for path in (f"/{track}/{RUNG}/playlist.m3u8", f"/{track}/{RUNG}/init.mp4"):
        assert (await get(client, path, sid)).status == 200
    for number in numbers:
        assert (await get(client, segment(track, number), sid)).status == 200


async def settled(client: Client) -> None:
    """Wait until the prefetcher has nothing queued and nothing in progress."""
    app: web.Application | None = client.app
    assert app is not None
    prefetcher: Prefetcher = app[PREFETCHER]

    async def idle() -> bool:
        return prefetcher.idle()

    await wait_for_async(idle, "the prefetcher is idle")


async def metric(client: Client, name: str, **labels: str) -> float:
    """One sample of ``/metrics`` (0 when absent)."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
