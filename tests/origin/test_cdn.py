"""A real CDN in front of the origin: Debian's nginx with proxy_cache, configured
by the template we ship in deploy/nginx/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fetch import fetch
from tests.nginx_edge import NginxEdge
from tests.origin.conftest import TRACK, free_port
from tests.origin.originproc import cadenza_serve
from tests.origin.waiting import wait_for


@pytest.fixture(scope="module")
def cdn(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(edge URL, origin URL): cadenza serve with 1 s manifest TTL behind nginx."""
    prefix = tmp_path_factory.mktemp("nginx")
    with cadenza_serve(str(packaged_root), prefix, manifest_max_age_s=1) as origin:
        edge = NginxEdge(prefix / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield edge.url, origin.url
        finally:
            edge.stop()


def test_second_pull_of_a_segment_is_a_cache_hit(cdn: tuple[str, str]) -> None:
    edge, _ = cdn
    url = f"{edge}/{TRACK}/aac-64k/seg-00001.m4s"
    first = fetch(url)
    second = fetch(url)
    assert (first[1]["X-Cache-Status"], second[1]["X-Cache-Status"]) == ("MISS", "HIT")
    assert first[2] == second[2]


def test_cmcd_arguments_share_one_cache_entry(cdn: tuple[str, str]) -> None:
    edge, _ = cdn
    url = f"{edge}/{TRACK}/aac-64k/seg-00002.m4s"
    fetch(url + "?CMCD=sid%3D%22a%22")
    status, headers, _ = fetch(url + "?CMCD=sid%3D%22b%22%2Cbl%3D300")
    assert (status, headers["X-Cache-Status"]) == (200, "HIT")


def test_expired_manifest_is_revalidated_with_a_304_from_the_origin(cdn: tuple[str, str]) -> None:
    edge, origin = cdn
    url = f"{edge}/{TRACK}/aac-64k/playlist.m3u8"
    fetch(url)

    def past_max_age() -> tuple[int, dict[str, str], bytes] | None:
        # Fresh, the edge answers from its cache (HIT); once the 1 s max-age has run
        # out by nginx's own clock, the next request goes to the origin.
        answer = fetch(url)
        return answer if answer[1]["X-Cache-Status"] != "HIT" else None

    status, headers, body = wait_for(past_max_age, "the manifest expired at the edge", poll_s=0.1)
    assert status == 200
    assert headers["X-Cache-Status"] == "REVALIDATED"
    assert body.startswith(b"#EXTM3U")
    metrics = fetch(f"{origin}/metrics")[2].decode()
    assert 'route="manifest",status="304"' in metrics


def test_edge_serves_range_requests_for_players(cdn: tuple[str, str]) -> None:
    edge, _ = cdn
    status, _headers, body = fetch(f"{edge}/{TRACK}/flac/init.mp4", Range="bytes=0-7")
    assert status == 206
    assert body[4:8] == b"ftyp"
