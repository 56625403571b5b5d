"""Abuse: beacon floods keep memory bounded and show in /metrics; per-address
rate limits on the JSON API are configurable (off by default)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cadenza.origin.errors import SettingsError
from cadenza.origin.keys import SESSIONS
from cadenza.origin.settings import load_settings
from tests.origin.conftest import TRACK, MakeClient

SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"


def _metric(text: str, name: str) -> float:
    """The value of one sample line, ``name`` with its labels as exported."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


async def _metrics(client: Any) -> str:
    text: str = await (await client.get("/metrics")).text()
    return text


async def test_flood_from_one_session_is_limited_and_counted(make_client: MakeClient) -> None:
    client = await make_client(beacon_burst=5, beacon_rate_per_s=0.01)
    statuses = []
    for index in range(40):
        response = await client.post("/v1/beacons", json={"sid": "flood", "bl": index})
        statuses.append(response.status)
    assert statuses == [204] * 5 + [429] * 35
    assert response.headers["Retry-After"] == "100"
    assert (await response.json())["error"] == "rate_limited"
    # A batch of payloads counts each: 10 more in one body, all dropped.
    batch = await client.post("/v1/beacons", json=[{"sid": "flood", "bl": 1}] * 10)
    assert batch.status == 429
    metrics = await _metrics(client)
    assert _metric(metrics, 'cadenza_beacons_total{kind="post",result="rate_limited"}') == 45
    assert _metric(metrics, 'cadenza_beacons_total{kind="post",result="ok"}') == 5
    assert await client.server.app[SESSIONS].count() == 1
    report = await (await client.get("/v1/sessions/flood")).json()
    assert report["beacons"] == 5  # the dropped ones never reached the session


async def test_flood_of_sessions_stays_within_sessions_max(make_client: MakeClient) -> None:
    """Many sids, each within its own rate: the store keeps the newest
    ``sessions_max`` and counts the evicted ones."""
    sessions_max = 50
    client = await make_client(sessions_max=sessions_max)
    store = client.server.app[SESSIONS]
    sent = 0
    for batch in range(8):  # 8 x 200 = 1600 distinct sessions
        body = [{"sid": f"s{batch}-{i}", "bl": 1000, "mtp": 500} for i in range(200)]
        assert (await client.post("/v1/beacons", json=body)).status == 204
        sent += len(body)
        assert await store.count() <= sessions_max
    # Segment requests naming new sessions go through the same bounded store.
    for index in range(100):
        query = f"?CMCD=sid%3D%22m{index}%22%2Cbl%3D300"
        assert (await client.get(SEGMENT + query)).status == 200
    sent += 100
    assert await store.count() == sessions_max
    metrics = await _metrics(client)
    assert _metric(metrics, "cadenza_sessions_evicted_total") == sent - sessions_max
    assert _metric(metrics, "cadenza_sessions_active") <= sessions_max
    listing = await (await client.get("/v1/sessions?limit=10000")).json()
    assert listing["summary"]["active"] == sessions_max
    # The newest survive: the last segment request's session is there.
    assert (await client.get("/v1/sessions/m99")).status == 200
    assert (await client.get("/v1/sessions/s0-0")).status == 404


async def test_per_address_limit_is_off_by_default(make_client: MakeClient) -> None:
    client = await make_client()
    for _ in range(60):
        assert (await client.get("/v1/sessions")).status == 200
    # Every route's series is there from the start; none counted anything.
    limited = [
        line
        for line in (await _metrics(client)).splitlines()
        if line.startswith("cadenza_ip_rate_limited_total{")
    ]
    assert limited and all(line.endswith(" 0.0") for line in limited)


async def test_per_address_limit_covers_the_json_api_not_media(make_client: MakeClient) -> None:
    client = await make_client(ip_rate_per_s=0.5, ip_burst=3)
    for _ in range(3):
        assert (await client.get("/v1/sessions")).status == 200
    limited = await client.get("/v1/sessions")
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "2"
    answer = await limited.json()
    assert answer["error"] == "rate_limited" and "per-address" in answer["detail"]
    beacon = await client.post("/v1/beacons", json={"sid": "ip", "bl": 1})
    assert beacon.status == 429  # one bucket per address, across the JSON API
    assert (await client.get("/v1/sessions/ip")).status == 429
    assert (await client.get(SEGMENT)).status == 200  # media is never limited here
    assert (await client.get(f"/{TRACK}/master.m3u8")).status == 200
    assert (await client.get("/healthz")).status == 200
    metrics = await _metrics(client)
    assert _metric(metrics, 'cadenza_ip_rate_limited_total{route="sessions"}') == 2
    assert _metric(metrics, 'cadenza_ip_rate_limited_total{route="beacons"}') == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0.0, 20)),
        ({"CADENZA_IP_RATE_PER_S": "0"}, (0.0, 20)),
        ({"CADENZA_IP_RATE_PER_S": "2.5", "CADENZA_IP_BURST": "7"}, (2.5, 7)),
    ],
)
def test_per_address_limit_settings(env: dict[str, str], expected: tuple[float, int]) -> None:
    settings = load_settings({"root": "/srv"}, env=env)
    assert (settings.ip_rate_per_s, settings.ip_burst) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"CADENZA_IP_RATE_PER_S": "-1"},
        {"CADENZA_IP_RATE_PER_S": "nan"},
        {"CADENZA_IP_BURST": "0"},
        {"CADENZA_MAX_HEADERS": "0"},
        {"CADENZA_KEEPALIVE_TIMEOUT_S": "0"},
        {"CADENZA_BODY_TIMEOUT_S": "-3"},
    ],
)
def test_protective_settings_refuse_nonsense(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_settings({"root": "/srv"}, env=env)
