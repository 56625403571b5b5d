"""Predictive prefetch in a real origin over packaged tracks: the stated queue
(``POST /v1/sessions/{sid}/queue``), CMCD ``nor``, transitions learned from
sessions, preload hints, the budgets, and the first segment of a queued track
already hot when the session gets there."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from aiohttp import ClientResponse

from tests.origin.prefetch_helpers import (
    RUNG,
    Client,
    MakeOrigin,
    catalogue,
    get,
    make_origin,
    metric,
    play,
    segment,
    settled,
)
from tests.origin.waiting import wait_for_async

__all__ = ["catalogue", "make_origin"]  # fixtures

ISSUED = "cadenza_prefetch_issued_total"
DROPPED = "cadenza_prefetch_dropped_total"


async def _queue(client: Client, sid: str, body: object) -> ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        f"/v1/sessions/{sid}/queue", data=data, headers={"Content-Type": "application/json"}
    )
    await response.read()
    return response


async def test_a_two_track_queue_starts_its_second_track_hot(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    response = await _queue(client, "s1", {"tracks": ["a", "b"]})
    assert response.status == 200
    assert await response.json() == {"sid": "s1", "queue": ["a", "b"]}
    await play(client, "s1", "a", (1, 2))  # segment 2 of 3: past the half of a
    await settled(client)
    # Never asked for by anyone: a track off the queue is cold.
    cold = await get(client, segment("c", 1), "other")
    assert cold.headers["X-Cadenza-Cache"] == "miss"
    for path in (f"/b/{RUNG}/playlist.m3u8", f"/b/{RUNG}/init.mp4", segment("b", 1)):
        first = await get(client, path, "s1")
        assert first.status == 200
        assert first.headers["X-Cadenza-Cache"] == "hit", path
    assert await metric(client, ISSUED, reason="queue") >= 5  # model, playlist, init, 2 segments
    assert await metric(client, "cadenza_prefetch_used_total") == 3
    assert await metric(client, "cadenza_first_byte_seconds_count", source="prefetched") == 3
    assert await metric(client, "cadenza_first_byte_seconds_count", source="plain") >= 5


async def test_the_next_track_is_prepared_on_the_rung_being_played(
    make_origin: MakeOrigin,
) -> None:
    client = await make_origin()
    await _queue(client, "s1", {"tracks": ["b"]})
    for number in (1, 2):
        path = f"/a/aac-256k/seg-{number:05d}.m4s"
        assert (await get(client, path, "s1")).status == 200
    await settled(client)
    assert (await get(client, "/b/aac-256k/seg-00001.m4s", "s1")).headers["X-Cadenza-Cache"] == (
        "hit"
    )
    assert (await get(client, "/b/aac-64k/seg-00001.m4s", "s1")).headers["X-Cadenza-Cache"] == (
        "miss"
    )


async def test_nothing_is_prepared_before_the_half_of_a_track(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    await _queue(client, "s1", {"tracks": ["a", "b"]})
    await play(client, "s1", "a", (1,))  # segment 1 of 3
    await settled(client)
    assert await metric(client, ISSUED, reason="queue") == 0
    assert (await get(client, segment("b", 1), "s1")).headers["X-Cadenza-Cache"] == "miss"


async def test_the_session_report_shows_the_queue_and_the_predicted_next(
    make_origin: MakeOrigin,
) -> None:
    client = await make_origin()
    await play(client, "s1", "a", (1,))
    await _queue(client, "s1", {"tracks": ["a", "c", "d"]})
    await settled(client)
    report = await (await client.get("/v1/sessions/s1")).json()
    assert report["queue"] == ["a", "c", "d"]
    assert report["predicted_next"] == [{"track": "c", "probability": 1.0, "source": "queue"}]
    # A new queue replaces it.
    await _queue(client, "s1", {"tracks": ["d"]})
    report = await (await client.get("/v1/sessions/s1")).json()
    assert report["queue"] == ["d"]
    assert report["predicted_next"][0]["track"] == "d"


async def test_malformed_queues_are_refused_with_their_reason(make_origin: MakeOrigin) -> None:
    client = await make_origin(prefetch_queue_max=5)
    cases: list[tuple[object, int, str]] = [
        (b"{not json", 400, "bad_queue"),
        ({"tracks": "a"}, 400, "bad_queue"),
        (["a", "b"], 400, "bad_queue"),
        ({"tracks": ["a", "../b"]}, 400, "bad_queue"),
        ({"tracks": ["a", 7]}, 400, "bad_queue"),
        ({"tracks": [".hidden"]}, 400, "bad_queue"),
        ({"tracks": ["a"] * 6}, 413, "queue_too_long"),
        (b"x" * (65 * 1024), 413, "payload_too_large"),
    ]
    for body, status, code in cases:
        response = await _queue(client, "s1", body)
        assert response.status == status, body
        assert (await response.json())["error"] == code
    assert (await _queue(client, "s1", {"tracks": ["a"] * 5})).status == 200


async def test_a_queue_flood_is_rate_limited_per_client(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    started_s = time.monotonic()
    statuses = [(await _queue(client, f"s{n}", {"tracks": ["a", "b"]})).status for n in range(40)]
    elapsed_s = time.monotonic() - started_s
    assert 429 in statuses
    # A burst of 10, then 2 a second.
    assert statuses.count(200) <= 10 + 2 * elapsed_s + 1
    thousands = {"tracks": [f"t{n}" for n in range(5000)]}
    late = await _queue(client, "s-late", thousands)
    assert late.status in (413, 429)


async def test_nor_warms_the_next_object_of_the_same_track(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    await get(client, segment("a", 1), "s1", nor="seg-00002.m4s")
    await settled(client)
    assert await metric(client, ISSUED, reason="nor") == 1
    assert (await get(client, segment("a", 2), "s1")).headers["X-Cadenza-Cache"] == "hit"
    # Relative references across rungs of the track are fine too.
    await get(client, segment("a", 2), "s1", nor="../aac-64k/seg-00003.m4s")
    await settled(client)
    assert (await get(client, "/a/aac-64k/seg-00003.m4s", "s1")).headers["X-Cadenza-Cache"] == (
        "hit"
    )


async def test_bogus_nor_is_not_warmed_and_counted(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    bogus = [
        "../../b/aac-128k/seg-00001.m4s",  # another track
        "/b/aac-128k/seg-00001.m4s",  # another track, absolute path
        "http://elsewhere.example/b/aac-128k/seg-00001.m4s",  # another host
        "%2e%2e/%2e%2e/b/aac-128k/seg-00001.m4s",  # encoded dot segments: another track
        "../.hidden/x.m4s",  # a name the origin never serves
        "seg-00002.txt",  # not a manifest or a segment
        "x" * 600,
    ]
    for nor in bogus:
        await get(client, segment("a", 1), "s1", nor=nor)
    await settled(client)
    assert await metric(client, DROPPED, reason="bad_nor") == len(bogus)
    assert await metric(client, ISSUED, reason="nor") == 0
    assert (await get(client, segment("b", 1), "s2")).headers["X-Cadenza-Cache"] == "miss"


async def test_transitions_learned_over_sessions_predict_the_next_track(
    make_origin: MakeOrigin,
) -> None:
    client = await make_origin()
    for n in range(3):  # three sessions went from a to b, one from a to c
        await play(client, f"past{n}", "a", (1,))
        await play(client, f"past{n}", "b", (1,))
    await play(client, "past3", "a", (1,))
    await play(client, "past3", "c", (1,))
    await settled(client)
    await play(client, "now", "a", (1,))
    await settled(client)
    report = await (await client.get("/v1/sessions/now")).json()
    assert report["predicted_next"] == [{"track": "b", "probability": 0.75, "source": "learned"}]
    # It gets near the end of a: b is prepared (c, at 0.25, is below the threshold).
    await get(client, segment("a", 2), "now")
    await settled(client)
    assert await metric(client, ISSUED, reason="learned") >= 1
    assert (await get(client, "/b/aac-128k/seg-00002.m4s", "now")).headers[
        "X-Cadenza-Cache"
    ] == "hit"
    assert (await get(client, "/c/aac-128k/seg-00002.m4s", "now")).headers[
        "X-Cadenza-Cache"
    ] == "miss"


async def test_cid_names_the_content_when_given(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    await get(client, segment("a", 1), "p1", cid="a")
    await get(client, segment("b", 1), "p1", cid="b")
    await settled(client)
    await get(client, segment("a", 1), "p2", cid="a")
    await settled(client)
    report = await (await client.get("/v1/sessions/p2")).json()
    assert report["predicted_next"] == [{"track": "b", "probability": 1.0, "source": "learned"}]


async def test_the_last_segments_hint_the_next_track_manifest(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    await _queue(client, "s1", {"tracks": ["b"]})
    await play(client, "s1", "a", (1, 2))
    await settled(client)
    last = await get(client, segment("a", 3), "s1")
    assert last.headers["Link"] == "</b/master.m3u8>; rel=preload; as=fetch"
    assert last.headers["Cache-Control"].startswith("private")  # the session's, not shared
    playlist = await get(client, f"/a/{RUNG}/playlist.m3u8", "s1")
    assert playlist.headers["Link"] == "</b/master.m3u8>; rel=preload; as=fetch"
    # The first segment, and anyone else's request, carry no hint.
    assert "Link" not in (await get(client, segment("a", 1), "s1")).headers
    plain = await get(client, segment("a", 3))
    assert "Link" not in plain.headers
    assert plain.headers["Cache-Control"].startswith("public")


async def test_a_dash_session_is_hinted_the_mpd(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    await _queue(client, "d1", {"tracks": ["b"]})
    for number in (1, 2):
        await get(client, segment("a", number), "d1")
    await settled(client)
    last = await get(client, segment("a", 3), "d1")
    assert last.headers["Link"] == "</b/manifest.mpd>; rel=preload; as=fetch"


async def test_the_session_budget_bounds_a_nor_flood(make_origin: MakeOrigin) -> None:
    client = await make_origin(prefetch_session_max=3, prefetch_rate_per_s=1000.0)
    nors = [f"../{rung}/seg-0000{n}.m4s" for rung in ("aac-64k", "aac-256k") for n in (1, 2, 3)]
    for nor in nors:
        await get(client, segment("a", 1), "flood", nor=nor)
    await settled(client)
    issued = await metric(client, ISSUED, reason="nor")
    assert 3 <= issued <= 4  # a burst of 3, then 3 a minute
    assert await metric(client, DROPPED, reason="session_budget") == len(nors) - issued


async def test_the_global_budget_bounds_warming_across_sessions(make_origin: MakeOrigin) -> None:
    client = await make_origin(prefetch_rate_per_s=0.5, prefetch_burst=2)
    started_s = time.monotonic()
    rungs = ("aac-64k", "aac-256k", "aac-320k", "opus-64k", "opus-128k")
    for index, rung in enumerate(rungs):
        for number in (1, 2, 3):
            nor = f"../{rung}/seg-0000{number}.m4s"
            await get(client, segment("a", 1), f"s{index}-{number}", nor=nor)

    async def burst_spent() -> bool:
        return await metric(client, ISSUED, reason="nor") >= 2

    await wait_for_async(burst_spent, "the burst is warmed")
    issued = await metric(client, ISSUED, reason="nor")
    # A burst of 2, then one every 2 s: never the 15 objects named.
    assert issued <= 2 + 0.5 * (time.monotonic() - started_s) + 1
    assert issued < 15


async def _beacon(client: Client, text: str) -> ClientResponse:
    response = await client.post(
        "/v1/beacons", data=text.encode(), headers={"Content-Type": "application/cmcd"}
    )
    await response.read()
    return response


async def test_a_beacon_nor_is_warmed(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    await get(client, segment("a", 1), "s1")
    # Against the request the beacon reports on (v2 response mode: url) ...
    url = "https://cdn.example/a/aac-64k/seg-00001.m4s"
    answer = await _beacon(client, f'sid="s1",url="{url}",nor="seg-00002.m4s",ttlb=90')
    assert answer.status == 204
    # ... else against the session's last request, and never outside its track.
    await _beacon(client, 'sid="s1",nor="seg-00003.m4s"')
    await _beacon(client, 'sid="s1",nor="../../b/aac-128k/seg-00001.m4s"')
    await settled(client)
    assert await metric(client, ISSUED, reason="nor") == 2
    assert await metric(client, DROPPED, reason="bad_nor") == 1
    for path in ("/a/aac-64k/seg-00002.m4s", segment("a", 3)):
        assert (await get(client, path, "s1")).headers["X-Cadenza-Cache"] == "hit", path
    assert (await get(client, segment("b", 1), "s1")).headers["X-Cadenza-Cache"] == "miss"
    # A malformed beacon is refused as before, nor or not.
    assert (await _beacon(client, 'nor="seg-00002.m4s"')).status == 400


async def test_thousands_of_bogus_nors_warm_nothing(make_origin: MakeOrigin) -> None:
    client = await make_origin()
    per_request = 50  # a CMCD v2 inner list
    requests = 40
    for n in range(requests):
        names = " ".join(f'"../../t{n}-{i}/x/seg-00001.m4s"' for i in range(per_request))
        text = quote(f'sid="flood",nor=({names})', safe="")
        answer = await client.get(f"{segment('a', 1)}?CMCD={text}")
        await answer.read()
        assert answer.status == 200
    await settled(client)
    assert await metric(client, DROPPED, reason="bad_nor") == requests * per_request
    assert await metric(client, ISSUED, reason="nor") == 0
    assert await metric(client, "cadenza_hot_cache_lookups_total", result="miss") == 2
