"""The origin serves a live track (``<track>/live.json``): recognition, blocking
playlist reload (RFC 8216bis 6.2.5.2), delta updates, the dynamic MPD and
``/v1/time``, hinted parts held, the open segment streamed chunked to every
client from one producer, and the allowlist of names.  The test writes the
track (tests/origin/live_track.py) and advances it; nothing sleeps."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient, TestServer

from cadenza.manifests.hls import parse_master
from cadenza.origin.app import create_app
from cadenza.origin.keys import METRICS
from cadenza.origin.pathways import PathwaySetting
from cadenza.origin.settings import Settings
from tests.origin.live_track import LiveTrackWriter
from tests.origin.waiting import wait_for_async

PLAYLIST = "/radio/aac-64k/playlist.m3u8"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Client, LiveTrackWriter]]:
    writer = LiveTrackWriter(tmp_path)
    app = create_app(Settings(root=str(tmp_path), live_poll_s=0.01))
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, writer
    finally:
        await client.close()


def _sample(client: Client, name: str, **labels: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def _lists_part(body: str, name: str) -> bool:
    """An ``EXT-X-PART`` line names it (not the preload hint)."""
    return any(
        line.startswith("#EXT-X-PART:") and f'URI="{name}"' in line for line in body.splitlines()
    )


async def _blocked(client: Client, count: int) -> None:
    async def reached() -> bool:
        return _sample(client, "cadenza_live_blocked_requests") >= count

    await wait_for_async(reached, f"{count} requests blocked")


async def test_a_live_track_is_recognised_and_rendered(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_part()
    response = await client.get(PLAYLIST)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert response.headers["X-Cadenza-Cache"] == "live"
    # A plain reload: cached for at most one part (256 ms: whole seconds, so 0).
    assert response.headers["Cache-Control"] == "public, max-age=0"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    body = await response.text()
    assert _lists_part(body, "seg-00001.p0.m4s")
    assert "CAN-BLOCK-RELOAD=YES" in body
    master = await client.get("/radio/master.m3u8")
    assert master.status == 200
    assert "aac-128k/playlist.m3u8" in await master.text()


async def test_live_state_and_unknown_names_are_not_served(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_part()
    assert (await client.get("/radio/live.json")).status == 404
    assert (await client.get("/radio/aac-64k/other.m4s")).status == 404
    assert (await client.get("/radio/nope/playlist.m3u8")).status == 404
    # A complete part and the init segment are plain immutable files.
    part = await client.get("/radio/aac-64k/seg-00001.p0.m4s")
    assert part.status == 200
    assert await part.read() == writer.part_body("aac-64k", 1, 0)
    assert "immutable" in part.headers["Cache-Control"]
    init = await client.get("/radio/aac-64k/init-0.mp4")
    assert init.status == 200


async def test_blocking_reload_answers_when_the_part_lands(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_part()
    writer.add_part()  # segment 1, parts 0 and 1
    asked = asyncio.ensure_future(client.get(f"{PLAYLIST}?_HLS_msn=1&_HLS_part=2"))
    await _blocked(client, 1)
    assert not asked.done()
    writer.add_part()
    response = await asked
    assert response.status == 200
    assert _lists_part(await response.text(), "seg-00001.p2.m4s")
    assert response.headers["Cache-Control"] == "public, max-age=1"
    assert _sample(client, "cadenza_live_blocking_requests_total", outcome="answered") == 1
    # What the playlist has already is answered at once.
    again = await client.get(f"{PLAYLIST}?_HLS_msn=1&_HLS_part=0")
    assert again.status == 200


async def test_many_requests_wait_on_one_event(live: tuple[Client, LiveTrackWriter]) -> None:
    client, writer = live
    writer.add_part()
    asked = [
        asyncio.ensure_future(client.get(f"{PLAYLIST}?_HLS_msn=1&_HLS_part=1")) for _ in range(50)
    ]
    await _blocked(client, 50)
    assert _sample(client, "cadenza_live_tracks_watched") == 1
    writer.add_part()
    answers = await asyncio.gather(*asked)
    assert [a.status for a in answers] == [200] * 50


async def test_blocking_reload_times_out_with_503(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_part()
    # Three target durations: the 1.024 s segment target is a 2 s EXT-X-TARGETDURATION.
    response = await client.get(f"{PLAYLIST}?_HLS_msn=1&_HLS_part=1")
    assert response.status == 503
    assert _sample(client, "cadenza_live_blocking_requests_total", outcome="timed_out") == 1


@pytest.mark.parametrize(
    "query",
    [
        "_HLS_msn=-1",
        "_HLS_msn=abc",
        "_HLS_msn=",
        "_HLS_msn=1&_HLS_part=x",
        "_HLS_part=1",  # a part without a segment: MUST be 400
        "_HLS_msn=4",  # more than two segments past the last one
        "_HLS_msn=1&_HLS_part=40",  # past the Advance Part Limit (3 / 0.256 s: 12 parts)
        "_HLS_skip=NO",
    ],
)
async def test_bad_delivery_directives_are_refused_at_once(
    live: tuple[Client, LiveTrackWriter], query: str
) -> None:
    client, writer = live
    writer.add_part()
    response = await client.get(f"{PLAYLIST}?{query}")
    assert response.status == 400
    assert _sample(client, "cadenza_live_blocked_requests") == 0
    assert _sample(client, "cadenza_live_blocking_requests_total", outcome="bad") == 1


async def test_an_ended_stream_ignores_the_directives(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_part()
    writer.end()

    async def ended() -> bool:
        response = await client.get(f"{PLAYLIST}?_HLS_msn=3")
        return response.status == 200 and "#EXT-X-ENDLIST" in await response.text()

    await wait_for_async(ended, "the ended playlist")


async def test_delta_update_skips_old_segments(live: tuple[Client, LiveTrackWriter]) -> None:
    client, writer = live
    writer.add_segments(20)  # 20.5 s: more than CAN-SKIP-UNTIL (6 target durations: 12 s)
    writer.add_part()
    full = await (await client.get(PLAYLIST)).text()
    delta_response = await client.get(f"{PLAYLIST}?_HLS_skip=YES")
    assert delta_response.status == 200
    delta = await delta_response.text()
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta
    assert "#EXT-X-SKIP" not in full
    assert len(delta) < len(full)


async def test_dynamic_mpd_and_the_time_endpoint(live: tuple[Client, LiveTrackWriter]) -> None:
    client, writer = live
    writer.add_segments(2)
    writer.add_part()
    response = await client.get("/radio/manifest.mpd")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/dash+xml"
    assert response.headers["Cache-Control"] == "public, max-age=0"
    mpd = await response.text()
    assert 'type="dynamic"' in mpd
    assert "urn:mpeg:dash:utc:http-iso:2014" in mpd
    assert f"{client.make_url('/v1/time')}" in mpd
    clock = await client.get("/v1/time")
    assert clock.status == 200
    assert clock.headers["Cache-Control"] == "no-store"
    assert clock.headers["Access-Control-Allow-Origin"] == "*"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", await clock.text())


async def test_a_hinted_part_is_held_until_written(live: tuple[Client, LiveTrackWriter]) -> None:
    client, writer = live
    writer.add_part()
    asked = asyncio.ensure_future(client.get("/radio/aac-64k/seg-00001.p1.m4s"))
    await _blocked(client, 1)
    writer.add_part()
    response = await asked
    assert response.status == 200
    assert await response.read() == writer.part_body("aac-64k", 1, 1)
    # A part further ahead than the hint is not held: not found.
    assert (await client.get("/radio/aac-64k/seg-00001.p3.m4s")).status == 404


async def _read_chunks(client: Client, path: str, first: asyncio.Event) -> tuple[Any, bytes]:
    response = await client.get(path)
    assert response.status == 200
    received = b""
    while True:
        chunk = await response.content.readany()
        if not chunk:
            break
        received += chunk
        first.set()
    return response, received


async def test_the_open_segment_is_streamed_to_every_client(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_segments(1)
    writer.add_part()  # segment 2 is open: one part of four
    path = "/radio/aac-64k/seg-00002.m4s"
    firsts = [asyncio.Event(), asyncio.Event()]
    readers = [asyncio.ensure_future(_read_chunks(client, path, e)) for e in firsts]
    for first in firsts:  # both got the first part before the segment is complete
        await asyncio.wait_for(first.wait(), 60)
    assert not any(r.done() for r in readers)
    for _ in range(3):
        writer.add_part()
    final = writer.segment_file("aac-64k", 2).read_bytes()
    for reader in readers:
        response, body = await reader
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert body == final
    assert _sample(client, "cadenza_live_open_segment_streams_total", outcome="complete") == 2
    # Complete now: the file itself.
    whole = await client.get(path)
    assert "Transfer-Encoding" not in whole.headers
    assert await whole.read() == final


async def test_a_vod_track_beside_is_unaffected(live: tuple[Client, LiveTrackWriter]) -> None:
    client, writer = live
    vod = writer.root / "vod" / "aac-64k"
    vod.mkdir(parents=True)
    (vod / "playlist.m3u8").write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    response = await client.get("/vod/aac-64k/playlist.m3u8")
    assert response.status == 200
    assert response.headers["X-Cadenza-Cache"] != "live"
    assert await response.text() == "#EXTM3U\n#EXT-X-ENDLIST\n"
    assert (await client.get("/vod/live.json")).status == 404
    assert _sample(client, "cadenza_live_tracks_watched") == 0


async def test_an_open_segment_that_stops_growing_is_aborted(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_segments(1)
    writer.add_part()
    response = await client.get("/radio/aac-64k/seg-00002.m4s")
    assert response.status == 200
    first = await response.content.readany()
    assert first == writer.part_body("aac-64k", 2, 0)
    # No part for three target durations (6 s): the connection closes without the
    # terminating chunk, which the client sees as a broken body.
    with pytest.raises(ClientPayloadError):
        await response.content.read()
    assert _sample(client, "cadenza_live_open_segment_streams_total", outcome="aborted") == 1


async def test_cmcd_sessions_are_kept_on_live(live: tuple[Client, LiveTrackWriter]) -> None:
    client, writer = live
    writer.add_part()
    cmcd = quote('sid="live-1",br=64,ot=m', safe="")
    response = await client.get(f"{PLAYLIST}?CMCD={cmcd}")
    assert response.status == 200
    session = await client.get("/v1/sessions/live-1")
    assert session.status == 200
    part = await client.get(f"/radio/aac-64k/seg-00001.p0.m4s?CMCD={cmcd}")
    assert part.status == 200
    # CMSD as on a VOD segment of a known session (CTA-5006): the part's own duration
    # (a 256 ms part target), the rung's bitrate, a live stream; answered private.
    assert part.headers["CMSD-Static"] == "ot=a,br=64,d=256,st=l"
    assert part.headers["CMSD-Dynamic"].startswith('"cadenza"')
    assert part.headers["Cache-Control"].startswith("private")
    # Without a session: the shared immutable part, no CMSD.
    plain = await client.get("/radio/aac-64k/seg-00001.p0.m4s")
    assert "CMSD-Static" not in plain.headers
    assert "immutable" in plain.headers["Cache-Control"]
    assert plain.headers["Cache-Control"].startswith("public")
    # The open segment, streamed by the live path, carries it too.
    streamed = await client.get(f"/radio/aac-64k/seg-00001.m4s?CMCD={cmcd}", timeout=None)
    headers = streamed.headers
    assert headers["CMSD-Static"].endswith(",st=l") and "d=" not in headers["CMSD-Static"]
    streamed.close()


async def test_rendition_filters_apply_to_the_live_master_and_mpd(
    live: tuple[Client, LiveTrackWriter],
) -> None:
    client, writer = live
    writer.add_part()
    master = await (await client.get("/radio/master.m3u8?max_bitrate=64")).text()
    assert "aac-64k/playlist.m3u8" in master
    assert "aac-128k" not in master
    mpd = await (await client.get("/radio/manifest.mpd?min_bitrate=100")).text()
    assert 'id="aac-128k"' in mpd
    assert 'id="aac-64k"' not in mpd
    # The same refusals as for a VOD track: a bad value, and a filter nothing matches.
    bad = await client.get("/radio/master.m3u8?codec=mp3")
    assert bad.status == 400
    assert "unknown codec" in await bad.text()
    none = await client.get("/radio/manifest.mpd?codec=opus")
    assert none.status == 404


async def test_live_manifests_are_steered_like_vod(tmp_path: Path) -> None:
    """With pathways configured, the live master playlist lists every variant once
    per pathway under the steering tag, and the MPD names a BaseURL per pathway and
    the steering server (still XSD-valid: tests/manifests check the schema)."""
    writer = LiveTrackWriter(tmp_path)
    settings = Settings(
        root=str(tmp_path),
        live_poll_s=0.01,
        pathways=(
            PathwaySetting("cdn-a", "http://127.0.0.1:9/a"),
            PathwaySetting("cdn-b", "http://127.0.0.1:9/b"),
        ),
        content_steering_url="https://steer.example",
        pathway_health_interval_s=3600.0,
    )
    client: Client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        writer.add_part()
        master = await client.get("/radio/master.m3u8")
        text = await master.text()
        assert '#EXT-X-CONTENT-STEERING:SERVER-URI="https://steer.example/v1/steering/radio' in text
        variants = parse_master(text)
        assert sorted((v.pathway_id, v.uri) for v in variants) == [
            ("cdn-a", "http://127.0.0.1:9/a/radio/aac-128k/playlist.m3u8"),
            ("cdn-a", "http://127.0.0.1:9/a/radio/aac-64k/playlist.m3u8"),
            ("cdn-b", "http://127.0.0.1:9/b/radio/aac-128k/playlist.m3u8"),
            ("cdn-b", "http://127.0.0.1:9/b/radio/aac-64k/playlist.m3u8"),
        ]
        assert master.headers["Cache-Control"].startswith("public")
        mpd = await (await client.get("/radio/manifest.mpd")).text()
        assert '<BaseURL serviceLocation="cdn-b">http://127.0.0.1:9/b/radio/</BaseURL>' in mpd
        assert '<ContentSteering defaultServiceLocation="cdn-a"' in mpd
    finally:
        await client.close()
