"""A live track through the nginx edge we ship (deploy/nginx/edge.conf.template):
blocking playlist reloads are cached keyed on their LL-HLS delivery directives,
and concurrent identical ones are collapsed into one origin request by the
cache lock (issue 20: "the edge collapses concurrent requests")."""

from __future__ import annotations

import http.client
import re
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fetch import fetch
from tests.nginx_edge import NginxEdge
from tests.origin.conftest import free_port
from tests.origin.live_track import LiveTrackWriter
from tests.origin.originproc import cadenza_serve, established_on
from tests.origin.waiting import wait_for

PLAYLIST = "/radio/aac-64k/playlist.m3u8"
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "edge.conf.template"
WAITERS = 5


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[NginxEdge, str, LiveTrackWriter]]:
    # 1 s parts, 4 s segments: blocking answers are cached 4 s, held at most 12 s.
    writer = LiveTrackWriter(tmp_path / "root", part_target_us=1_000_000)
    writer.add_part()
    with cadenza_serve(str(writer.root), tmp_path, live_poll_s=0.02) as origin:
        proxy = NginxEdge(tmp_path / "edge", f"127.0.0.1:{origin.port}", free_port())
        proxy.start()
        try:
            yield proxy, origin.url, writer
        finally:
            proxy.stop()


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def _lists_part(body: bytes, name: str) -> bool:
    return any(
        line.startswith(b"#EXT-X-PART:") and f'URI="{name}"'.encode() in line
        for line in body.splitlines()
    )


def test_blocking_reloads_are_keyed_on_their_directives(
    edge: tuple[NginxEdge, str, LiveTrackWriter],
) -> None:
    proxy, _, writer = edge
    writer.add_part()  # segment 1, parts 0 and 1
    first = fetch(f"{proxy.url}{PLAYLIST}?_HLS_msn=1&_HLS_part=0")
    again = fetch(f"{proxy.url}{PLAYLIST}?_HLS_msn=1&_HLS_part=0")
    assert (first[0], again[0]) == (200, 200)
    assert (first[1]["X-Cache-Status"], again[1]["X-Cache-Status"]) == ("MISS", "HIT")
    # Another part is another entry, never the cached answer for part 0.
    other = fetch(f"{proxy.url}{PLAYLIST}?_HLS_msn=1&_HLS_part=1")
    assert other[1]["X-Cache-Status"] == "MISS"
    assert _lists_part(other[2], "seg-00001.p1.m4s")


def test_concurrent_blocking_reloads_reach_the_origin_once(
    edge: tuple[NginxEdge, str, LiveTrackWriter],
) -> None:
    proxy, origin_url, writer = edge
    answered = 'cadenza_live_blocking_requests_total{outcome="answered"}'
    before = _metric(origin_url, answered)
    url = f"{proxy.url}{PLAYLIST}?_HLS_msn=1&_HLS_part=1"
    with ThreadPoolExecutor(WAITERS) as pool:
        asked = [pool.submit(fetch, url, 30.0) for _ in range(WAITERS)]
        wait_for(lambda: established_on(proxy.port) >= WAITERS, "every player connected")
        wait_for(
            lambda: _metric(origin_url, "cadenza_live_blocked_requests") >= 1,
            "the edge's request blocked at the origin",
        )
        writer.add_part()
        answers = [a.result() for a in asked]
    assert [a[0] for a in answers] == [200] * WAITERS
    assert all(_lists_part(a[2], "seg-00001.p1.m4s") for a in answers)
    assert _metric(origin_url, answered) - before == 1


class _Streamer:
    """Reads one response as it arrives, from a thread: its bytes so far."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.body = bytearray()
        self.status: int | None = None
        self._connection = http.client.HTTPConnection(host, port, timeout=30)
        self._thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self._thread.start()

    def _read(self, path: str) -> None:
        self._connection.request("GET", path)
        response = self._connection.getresponse()
        self.status = response.status
        while chunk := response.read1(65536):
            self.body += chunk

    def join(self) -> bytes:
        self._thread.join(timeout=30)
        self._connection.close()
        return bytes(self.body)


def test_a_second_client_of_an_open_segment_is_fed_as_it_grows(
    edge: tuple[NginxEdge, str, LiveTrackWriter],
) -> None:
    proxy, _, writer = edge
    writer.add_segments(1)
    writer.add_part()  # segment 2 is open: one part of four
    path = "/radio/aac-64k/seg-00002.m4s"
    part_bytes = writer.part_bytes
    first = _Streamer("127.0.0.1", proxy.port, path)
    wait_for(lambda: len(first.body) >= part_bytes, "the first client got the first part")
    # The edge's cache lock holds the second client while the first download runs, but
    # only briefly: then it goes to the origin, which streams it the same open segment.
    second = _Streamer("127.0.0.1", proxy.port, path)
    wait_for(lambda: len(second.body) >= part_bytes, "the second client got the first part")
    assert not writer.segment_file("aac-64k", 2).exists()  # still open
    writer.add_part()
    wait_for(lambda: len(second.body) >= 2 * part_bytes, "the second client got the next part")
    for _ in range(2):
        writer.add_part()
    final = writer.segment_file("aac-64k", 2).read_bytes()
    assert first.join() == final
    assert second.join() == final
    assert (first.status, second.status) == (200, 200)


def test_the_segment_cache_lock_is_shorter_than_a_part() -> None:
    """nginx gives a request waiting on the lock nothing until the download it waits on
    ends, or the lock's timeout passes; for an open live segment that download lasts a
    segment, so the shipped timeout must stay under the shortest part (0.25 s)."""
    text = TEMPLATE.read_text()
    block = text[text.index(r"location ~ \.(m4s|mp4)$") :]
    block = block[: block.index("}")]
    found = re.search(r"proxy_cache_lock_timeout (\d+)ms;", block)
    assert found is not None, "the segment location sets its lock timeout in ms"
    assert int(found[1]) <= 250
