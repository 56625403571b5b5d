"""A dead S3 gives 503 + Retry-After quickly, cached objects keep flowing, and
the origin recovers by itself when S3 returns (waited for by asking, within
a deadline only a hang reaches)."""

from __future__ import annotations

import pytest

from tests.origin.conftest import TRACK, MakeClient, Moto
from tests.origin.waiting import wait_for_async

pytestmark = pytest.mark.asyncio


async def test_s3_outage_then_recovery(make_client: MakeClient, moto: Moto) -> None:
    client = await make_client("s3")
    cached = f"/{TRACK}/opus-64k/seg-00001.m4s"
    uncached = f"/{TRACK}/opus-64k/seg-00002.m4s"
    assert (await client.get(cached)).status == 200
    moto.stop()
    try:
        down = await client.get(uncached)
        assert down.status == 503
        assert down.headers["Retry-After"] == "3"
        assert (await down.json())["error"] == "storage_unavailable"
        assert (await client.get(cached)).status == 200  # served from memory meanwhile
        assert (await client.get("/readyz")).status == 503
    finally:
        moto.start()

    async def served() -> bool:
        async with client.get(uncached) as response:
            status: int = response.status
            return status == 200

    await wait_for_async(served, "the uncached object served again, without a restart")
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_storage_errors_total{backend="s3",kind="unavailable"}' in metrics
