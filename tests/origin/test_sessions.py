"""The bounded session and population stores and the token bucket."""

from __future__ import annotations

import pytest

from cadenza.abr.session import SessionState
from cadenza.origin.sessions import Bucket, MemoryPopulationStore, MemorySessionStore, take_token


async def test_session_store_is_bounded() -> None:
    store = MemorySessionStore(max_sessions=3, ttl_s=60.0)
    for index in range(5):
        await store.put(SessionState(sid=f"s{index}", first_seen_s=0.0, last_seen_s=0.0))
    assert await store.count() == 3
    assert store.evictions == 2
    assert await store.get("s0") is None


async def test_population_keeps_the_latest_estimate_per_session() -> None:
    store = MemoryPopulationStore()
    await store.record("k", "a", 100.0)
    await store.record("k", "a", 300.0)
    await store.record("k", "b", 100.0)
    prior = await store.prior("k")
    assert prior is not None and prior.sessions == 2
    assert prior.p50_bps == pytest.approx(200.0)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket: Bucket | None = None
    allowed = []
    for _ in range(4):
        ok, bucket = take_token(bucket, 0.0, rate_per_s=1.0, burst=3.0)
        allowed.append(ok)
    assert allowed == [True, True, True, False]
    ok, _ = take_token(bucket, 1.0, rate_per_s=1.0, burst=3.0)
    assert ok
