"""``GET /v1/ladder/recommendation``: the ladder the live sessions' throughput asks for."""

from __future__ import annotations

from tests.origin.conftest import MakeClient

SLOW_BPS = [60e3, 90e3, 100e3, 120e3, 150e3, 180e3]


async def test_live_recommendation_needs_sessions(make_client: MakeClient) -> None:
    response = await (await make_client()).get("/v1/ladder/recommendation")
    assert response.status == 409
    assert (await response.json())["error"] == "not_enough_data"


async def test_live_recommendation_from_beacons(make_client: MakeClient) -> None:
    client = await make_client()
    body = "\n".join(f'sid="p{i}",mtp={int(b / 1000)},d=4000' for i, b in enumerate(SLOW_BPS))
    posted = await client.post(
        "/v1/beacons", data=body, headers={"Content-Type": "application/cmcd"}
    )
    assert posted.status == 204
    response = await client.get("/v1/ladder/recommendation?max_rungs=2")
    assert response.status == 200
    data = await response.json()
    assert data["sessions"] == len(SLOW_BPS)
    assert 1 <= len(data["bitrates_kbps"]) <= 2
    assert data["ladder_toml"].startswith('name = "recommended"')


async def test_live_recommendation_rejects_a_bad_codec(make_client: MakeClient) -> None:
    response = await (await make_client()).get("/v1/ladder/recommendation?codec=mp3")
    assert response.status == 400
