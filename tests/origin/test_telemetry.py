"""Sessions from CMCD over HTTP: request CMCD, POST /v1/beacons, session reports,
per-session (steered) manifests and CMSD on segments (CTA-5004, CTA-5006)."""

from __future__ import annotations

import json
from typing import Any

import m3u8
import pytest
from lxml import etree

from tests.origin.conftest import TRACK, MakeClient

SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"
CMCD_SLOW = "CMCD=br%3D128%2Cbl%3D2000%2Cd%3D4000%2Cmtp%3D90%2Cot%3Da%2Csid%3D%22{sid}%22"


def _slow(sid: str) -> str:
    return "?" + CMCD_SLOW.format(sid=sid)


async def _session(client: Any, sid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{sid}")
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def test_segment_cmcd_query_opens_a_session(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get(SEGMENT + _slow("q1"))).status == 200
    report = await _session(client, "q1")
    assert (report["requests"], report["last_mtp_kbps"], report["last_bl_ms"]) == (1, 90, 2000)
    assert report["last_br_kbps"] == 128
    assert report["throughput_estimate_kbps"] == pytest.approx(90.0)
    assert report["track"] == TRACK


async def test_cmcd_headers_are_read_like_the_query(make_client: MakeClient) -> None:
    client = await make_client()
    headers = {"CMCD-Session": 'sid="h1"', "CMCD-Request": "bl=1500,mtp=400"}
    assert (await client.get(SEGMENT, headers=headers)).status == 200
    assert (await _session(client, "h1"))["last_bl_ms"] == 1500


async def test_malformed_cmcd_is_counted_and_the_segment_still_served(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    response = await client.get(SEGMENT + "?CMCD=bl%3D%22x%22%2Csid%3D%22m1%22%2Cbr%3D(((")
    assert response.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "cadenza_cmcd_malformed_values_total 2.0" in metrics
    assert (await _session(client, "m1"))["malformed_values"] == 2


async def test_unknown_session_is_404_with_a_reason(make_client: MakeClient) -> None:
    response = await (await make_client()).get("/v1/sessions/nobody")
    assert response.status == 404
    assert (await response.json())["error"] == "unknown_session"


async def test_event_mode_body_is_accepted(make_client: MakeClient) -> None:
    """CMCD v2 event mode as hls.js and dash.js send it: application/cmcd lines."""
    client = await make_client()
    body = 'e=ps,sid="e1",sta=p,ts=1700000000000\ne=t,sid="e1",bl=12000,br=256,mtp=2000\n'
    response = await client.post(
        "/v1/beacons", data=body, headers={"Content-Type": "application/cmcd"}
    )
    assert response.status == 204
    report = await _session(client, "e1")
    assert (report["beacons"], report["last_bl_ms"], report["last_mtp_kbps"]) == (2, 12000, 2000)


async def test_json_array_beacon_is_accepted(make_client: MakeClient) -> None:
    client = await make_client()
    payload = [{"sid": "j1", "bl": 800, "bs": True}, {"sid": "j1", "br": 64, "ot": "a"}]
    response = await client.post("/v1/beacons", json=payload)
    assert response.status == 204
    report = await _session(client, "j1")
    assert (report["stalls"], report["last_br_kbps"]) == (1, 64)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "bad_beacon"),
        ("[" * 100_000 + "]" * 100_000, "application/json", 413, "payload_too_large"),
        ("[" * 5000 + "]" * 5000, "application/json", 400, "bad_beacon"),
        ('"a string"', "application/json", 400, "bad_beacon"),
        ('{"bl": 5}', "application/json", 400, "bad_beacon"),
        ("", "application/cmcd", 400, "bad_beacon"),
        ('sid="x"', "image/png", 415, "unsupported_media_type"),
    ],
)
async def test_bad_beacons_get_a_reason(
    make_client: MakeClient, body: str, content_type: str, status: int, code: str
) -> None:
    client = await make_client()
    response = await client.post(
        "/v1/beacons", data=body.encode(), headers={"Content-Type": content_type}
    )
    assert response.status == status
    answer = await response.json()
    assert answer["error"] == code and answer["detail"]


async def test_beacon_flood_from_one_session_is_rate_limited(make_client: MakeClient) -> None:
    client = await make_client(beacon_burst=3, beacon_rate_per_s=0.01)
    statuses = []
    for _ in range(5):
        response = await client.post("/v1/beacons", json={"sid": "flood", "bl": 1})
        statuses.append(response.status)
    assert statuses == [204, 204, 204, 429, 429]
    assert "Retry-After" in response.headers
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_beacons_total{kind="post",result="rate_limited"} 2.0' in metrics


async def test_response_mode_delivery_time_becomes_a_sample(make_client: MakeClient) -> None:
    """v2 response mode: ``url`` + ``ttlb``; the origin knows the object's size."""
    client = await make_client()
    size = len(await (await client.get(SEGMENT)).read())
    beacon = {"sid": "r1", "url": f"http://cdn.example{SEGMENT}", "ttlb": 500}
    assert (await client.post("/v1/beacons", json=beacon)).status == 204
    report = await _session(client, "r1")
    assert report["throughput_samples"] == 1
    assert report["throughput_estimate_kbps"] == pytest.approx(size * 8 / 0.5 / 1000, rel=1e-3)


async def test_session_list_summarises(make_client: MakeClient) -> None:
    client = await make_client()
    for sid in ("l1", "l2"):
        await client.get(SEGMENT + _slow(sid))
    data = await (await client.get("/v1/sessions")).json()
    assert data["summary"]["active"] == 2
    assert {s["sid"] for s in data["sessions"]} == {"l1", "l2"}


async def _warm_slow_session(client: Any, sid: str) -> None:
    for _ in range(8):  # 8 x 4 s of samples at 90 kb/s: a confident estimate
        await client.get(SEGMENT + _slow(sid))


async def test_steered_master_lists_the_start_rung_first_and_caps(
    make_client: MakeClient,
) -> None:
    """RFC 8216 4.3.4.2: hls.js starts on the first variant; the cap removes the rest."""
    client = await make_client()
    await _warm_slow_session(client, "st1")
    response = await client.get(f"/{TRACK}/master.m3u8?sid=st1")
    assert response.status == 200
    assert response.headers["Cache-Control"].startswith("private")
    playlist = m3u8.loads(await response.text())
    uris = [p.uri for p in playlist.playlists]
    assert uris[0] == "aac-64k/playlist.m3u8"
    bandwidths = [p.stream_info.average_bandwidth for p in playlist.playlists]
    assert max(bandwidths) < 300_000  # 90 kb/s x 2.5 headroom: nothing above 256 kb/s
    report = await _session(client, "st1")
    assert report["guidance"]["start_bitrate_bps"] == 64_000
    assert report["recommended_max_bitrate_kbps"] < 320


async def test_steered_mpd_drops_representations_above_the_cap(make_client: MakeClient) -> None:
    client = await make_client()
    await _warm_slow_session(client, "st2")
    text = await (await client.get(f"/{TRACK}/manifest.mpd?sid=st2")).read()
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    found = etree.fromstring(text).xpath("//d:Representation/@id", namespaces=ns)
    assert isinstance(found, list)
    ids = [str(i) for i in found]
    assert "aac-64k" in ids
    assert "aac-320k" not in ids and "flac" not in ids


async def test_unsteered_master_is_the_public_file(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get(f"/{TRACK}/master.m3u8")
    assert response.headers["Cache-Control"].startswith("public")
    assert response.headers["X-Cadenza-Cache"] != "steered"


async def test_steering_can_be_switched_off(make_client: MakeClient) -> None:
    client = await make_client(guidance=False)
    await _warm_slow_session(client, "off")
    response = await client.get(f"/{TRACK}/master.m3u8?sid=off")
    assert response.headers["Cache-Control"].startswith("public")


async def test_known_session_segments_carry_cmsd(make_client: MakeClient) -> None:
    """CTA-5006: CMSD-Static describes the object, CMSD-Dynamic the session's etp."""
    client = await make_client()
    await _warm_slow_session(client, "c1")
    response = await client.get(SEGMENT + _slow("c1"))
    model = await (await client.get(f"/{TRACK}/presentation.json")).json()
    rendition = next(r for r in model["renditions"] if r["id"] == "aac-128k")
    first = rendition["segments"][0]
    duration_ms = first["duration_ticks"] * 1000 // rendition["timescale"]
    assert response.headers["CMSD-Static"] == f"ot=a,br=128,d={duration_ms},st=v"
    dynamic = response.headers["CMSD-Dynamic"]
    assert dynamic.startswith('"cadenza";etp=')
    etp = int(dynamic.split("etp=")[1].split(";")[0])
    # The origin's own measurement of the session (its requests' timing, the TCP
    # delivery rate of the previous response), never the player's mtp (90) echoed.
    assert abs(etp - (await _session(client, "c1"))["origin_throughput_kbps"]) <= 1
    assert etp != 90
    assert response.headers["Cache-Control"].startswith("private")


async def test_cmsd_headers_are_exposed_to_browsers(make_client: MakeClient) -> None:
    response = await (await make_client()).get(SEGMENT + _slow("x1"))
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "CMSD-Static" in exposed and "CMSD-Dynamic" in exposed


async def test_session_metrics_are_exported(make_client: MakeClient) -> None:
    client = await make_client()
    await client.get(SEGMENT + _slow("k1"))
    await client.get(SEGMENT.replace("128k", "64k") + _slow("k1").replace("br%3D128", "br%3D64"))
    metrics = await (await client.get("/metrics")).text()
    for line in (
        "cadenza_sessions_active 1.0",
        "cadenza_bitrate_switches_total 1.0",
        'cadenza_beacons_total{kind="request",result="ok"} 2.0',
        "cadenza_session_throughput_bits_per_second_count 2.0",
        "cadenza_session_bitrate_bits_per_second_count 2.0",
        "cadenza_session_qoe_count 2.0",
    ):
        assert line in metrics, line
    assert json.loads(json.dumps(await _session(client, "k1")))["switches"] == 1
