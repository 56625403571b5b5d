"""``?channels=`` at the origin: the stored master lists a 5.1 track's stereo set,
``?channels=6`` renders the surround set, with the loudness of what each plays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import m3u8
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cadenza.manifests.hls import LOUDNESS_DATA_IDS, render_master
from cadenza.manifests.jsonio import presentation_to_json
from cadenza.manifests.model import MASTER_NAME, PRESENTATION_NAME
from cadenza.origin.app import create_app
from cadenza.origin.settings import Settings
from tests.packager.test_channel_sets import _surround_presentation

pytestmark = pytest.mark.asyncio
MASTER = "/surround/master.m3u8"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    p = _surround_presentation()
    folder = tmp_path / p.track_id
    folder.mkdir()
    (folder / PRESENTATION_NAME).write_text(presentation_to_json(p))
    (folder / MASTER_NAME).write_text(render_master(p))
    test_client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(Settings(root=str(tmp_path))))
    )
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def _variants(client: TestClient[Any, Any], url: str) -> tuple[list[str], str]:
    response = await client.get(url)
    assert response.status == 200, await response.text()
    playlist = m3u8.loads(await response.text())
    loudness = {d.data_id: d.value for d in playlist.session_data}
    return [v.uri for v in playlist.playlists], loudness[LOUDNESS_DATA_IDS["integrated"]]


async def test_the_plain_master_is_the_stereo_set(client: TestClient[Any, Any]) -> None:
    for url in (MASTER, MASTER + "?codec=aac", MASTER + "?channels=2"):
        uris, integrated = await _variants(client, url)
        assert uris == ["aac-64k-2ch/playlist.m3u8", "aac-128k-2ch/playlist.m3u8"], url
        assert integrated == "-21.7"


async def test_channels_6_is_the_surround_set(client: TestClient[Any, Any]) -> None:
    uris, integrated = await _variants(client, MASTER + "?channels=6&codec=aac")
    assert uris == ["aac-160k-6ch/playlist.m3u8", "aac-320k-6ch/playlist.m3u8"]
    assert integrated == "-14.0"
    # Cached per filter: the stereo answer is not handed back for ?channels=6, nor back.
    assert (await _variants(client, MASTER + "?codec=aac"))[1] == "-21.7"
    assert (await _variants(client, MASTER + "?channels=6&codec=aac"))[1] == "-14.0"


async def test_channels_filters_the_mpd(client: TestClient[Any, Any]) -> None:
    response = await client.get("/surround/manifest.mpd?channels=6")
    assert response.status == 200
    text = await response.text()
    assert "aac-160k-6ch" in text and "aac-64k-2ch" not in text


@pytest.mark.parametrize(("query", "status"), [("channels=0", 400), ("channels=8", 404)])
async def test_bad_or_unmatched_channel_counts(
    client: TestClient[Any, Any], query: str, status: int
) -> None:
    response = await client.get(f"{MASTER}?{query}")
    assert response.status == status
