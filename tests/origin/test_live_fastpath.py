"""A live track behind the fast transport (``cadenza serve``'s runner and site):
its playlists are never answered from the hot cache (the answer core hands a
live track's manifest over to the aiohttp path, which renders it per request),
while its complete parts are served as any immutable file."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.origin.settings import Settings
from tests.origin.live_track import LiveTrackWriter
from tests.origin.rawhttp import ThreadedOrigin
from tests.origin.waiting import wait_for


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[ThreadedOrigin, LiveTrackWriter]]:
    writer = LiveTrackWriter(tmp_path)
    server = ThreadedOrigin(Settings(root=str(tmp_path), live_poll_s=0.01)).start()
    try:
        yield server, writer
    finally:
        server.stop()


def _lists_part(body: bytes, name: str) -> bool:
    """An ``EXT-X-PART`` line names it (not the preload hint)."""
    return any(
        line.startswith(b"#EXT-X-PART:") and f'URI="{name}"'.encode() in line
        for line in body.splitlines()
    )


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, dict(response.headers), response.read()


def test_live_playlists_follow_the_stream_on_the_fast_transport(
    origin: tuple[ThreadedOrigin, LiveTrackWriter],
) -> None:
    server, writer = origin
    base = f"http://127.0.0.1:{server.port}/radio/aac-64k"
    writer.add_part()
    status, headers, body = _get(f"{base}/playlist.m3u8")
    assert status == 200
    assert headers["X-Cadenza-Cache"] == "live"
    assert not _lists_part(body, "seg-00001.p1.m4s")
    writer.add_part()

    def updated() -> bool:
        return _lists_part(_get(f"{base}/playlist.m3u8")[2], "seg-00001.p1.m4s")

    wait_for(updated, "the playlist shows the new part")
    # A blocking reload (a query the fast transport does not read) is answered too.
    status, _, body = _get(f"{base}/playlist.m3u8?_HLS_msn=1&_HLS_part=1")
    assert status == 200
    assert _lists_part(body, "seg-00001.p1.m4s")
    status, headers, body = _get(f"{base}/seg-00001.p0.m4s")
    assert body == writer.part_body("aac-64k", 1, 0)
    assert "immutable" in headers["Cache-Control"]
