"""Next-track transitions in a real Redis (``redis_url``): shared by two origins,
bounded per track, expiring; and learning goes on from memory while Redis is down."""

from __future__ import annotations

from cadenza.origin.prefetch.transitions import FallbackTransitions, MemoryTransitionStore
from cadenza.origin.redis_store import RedisBackend
from cadenza.origin.redis_transitions import RedisTransitionStore
from tests.origin.conftest import RedisServer
from tests.origin.prefetch_helpers import (
    MakeOrigin,
    catalogue,
    get,
    make_origin,
    play,
    segment,
    settled,
)

__all__ = ["catalogue", "make_origin"]  # fixtures

TIMEOUT_S = 2.0


async def test_transitions_learned_on_one_origin_predict_on_another(
    make_origin: MakeOrigin, redis_server: RedisServer
) -> None:
    first = await make_origin(redis_url=redis_server.url, redis_timeout_s=TIMEOUT_S)
    second = await make_origin(redis_url=redis_server.url, redis_timeout_s=TIMEOUT_S)
    for n in range(2):
        await play(first, f"past{n}", "a", (1,))
        await play(first, f"past{n}", "c", (1,))
    await settled(first)
    with redis_server.client() as client:
        assert client.zscore("cadenza:transitions:a", "c") == 2.0
        assert client.pttl("cadenza:transitions:a") > 0
    await play(second, "now", "a", (1,))
    await settled(second)
    report = await (await second.get("/v1/sessions/now")).json()
    assert report["predicted_next"] == [{"track": "c", "probability": 1.0, "source": "learned"}]
    await get(second, segment("a", 2), "now")
    await settled(second)
    assert (await get(second, segment("c", 1), "now")).headers["X-Cadenza-Cache"] == "hit"


async def test_a_track_keeps_its_most_counted_successors(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, timeout_s=TIMEOUT_S)
    try:
        store = backend.transitions(per_track=4)
        for _ in range(3):
            await store.record("a", "often")
        for n in range(20):
            await store.record("a", f"once-{n}")
        found = await store.successors("a")
        assert len(found) == 4
        assert found[0] == ("often", 3)
        with redis_server.client() as client:
            assert client.zcard("cadenza:transitions:a") == 4
    finally:
        await backend.close()


async def test_transitions_expire(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, timeout_s=TIMEOUT_S)
    try:
        store = RedisTransitionStore(backend.client, timeout_s=TIMEOUT_S, ttl_s=0.05)
        await store.record("a", "b")
        with redis_server.client() as client:
            assert 0 < client.pttl("cadenza:transitions:a") <= 50
    finally:
        await backend.close()


async def test_while_redis_is_down_memory_learns_and_predicts(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, timeout_s=TIMEOUT_S)
    try:
        store = FallbackTransitions(backend.transitions(), MemoryTransitionStore())
        await store.record("a", "b")
        redis_server.stop()
        await store.record("a", "c")
        await store.record("a", "c")
        assert await store.successors("a") == [("c", 2), ("b", 1)]
        assert store.failures == 2 + 1
    finally:
        await backend.close()
