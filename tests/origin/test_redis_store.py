"""Sessions and population priors in a real Redis (``CADENZA_REDIS_URL``).

Each test gets its own ``redis-server`` on a loopback port (the ``redis_server``
fixture).  Covered: a session's exact round trip, TTL expiry, bounded
``active()``/``count()``, priors that agree across replicas, two origins (in
this process, and as two ``cadenza serve`` processes) sharing sessions, and an
outage: local state serves, one warning, counted, recovery by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cadenza.abr.cmcd_json import from_json_object
from cadenza.abr.controller import Reason
from cadenza.abr.delivery import Delivery
from cadenza.abr.population import population_of
from cadenza.abr.session import DecisionRecord, SessionState, apply_cmcd
from cadenza.origin.app import create_app
from cadenza.origin.errors import SettingsError, StoreUnavailableError
from cadenza.origin.metrics import create_metrics
from cadenza.origin.redis_sessions import decode_session, encode_session
from cadenza.origin.redis_store import RedisBackend
from cadenza.origin.sessions import MemoryPopulationStore
from cadenza.origin.settings import Settings, load_settings
from cadenza.origin.store_fallback import StoreHealth
from tests.origin.conftest import RedisServer, free_port
from tests.origin.waiting import wait_for_async

# redis-py's default socket timeout: what the configured redis_timeout_s replaces.
REDIS_DEFAULT_TIMEOUT_S = 5.0

REDIS_LOGGER = "cadenza.origin.redis"
# Generous on a shared two-core machine; the outage tests use a dead port, which fails at once.
TIMEOUT_S = 2.0


def _played(sid: str, now_s: float) -> SessionState:
    """A session with every kind of field set: throughput, switches, a stall, cid, track."""
    state: SessionState | None = None
    payloads: list[dict[str, object]] = [
        {"sid": sid, "cid": "album-1", "su": True, "bl": 0},
        {"sid": sid, "mtp": 900, "br": 128, "ot": "a", "d": 4000, "bl": 3000},
        {"sid": sid, "mtp": 250, "br": 96, "ot": "a", "d": 4000, "bs": True},
        {"sid": sid, "mtp": 1200, "br": 256, "ot": "a", "d": 4000, "bl": 9000},
    ]
    for index, payload in enumerate(payloads):
        state, _ = apply_cmcd(
            state,
            from_json_object(payload),
            now_s + index * 0.125,
            sid=sid,
            is_request=index % 2 == 0,
            track="track",
            network_key="net:10.0.0.0/24",
        )
    assert state is not None
    return state


@pytest.fixture
async def backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    opened = RedisBackend(redis_server.url, timeout_s=TIMEOUT_S)
    yield opened
    await opened.close()


@pytest.fixture
async def other_backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    """A second client, as another replica would have."""
    opened = RedisBackend(redis_server.url, timeout_s=TIMEOUT_S)
    yield opened
    await opened.close()


# -- the boundary -----------------------------------------------------------------


def test_only_the_redis_modules_import_redis() -> None:
    """The app keys, metrics, the request path and the fallback stores load without
    redis-py: only the ``redis_*`` modules import it."""
    code = (
        "import sys\n"
        "import cadenza.origin.keys, cadenza.origin.metrics, cadenza.origin.telemetry\n"
        "import cadenza.origin.store_fallback, cadenza.origin.content_steering\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))\n"
        "import cadenza.origin.redis_store\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == ["[]", "True"]


# -- the stores -------------------------------------------------------------------


def test_session_record_round_trips_exactly() -> None:
    state = _played("codec", 1_700_000_000.0)
    assert state.stalls == 1 and state.switches == 2 and state.estimator.can_estimate
    assert decode_session(encode_session(state)) == state
    with pytest.raises(ValueError, match="not a session record"):
        decode_session(b'{"sid": "x"}')  # first_seen_s, last_seen_s are required
    with pytest.raises(ValueError, match="not a session record"):
        decode_session(b"[1, 2]")


async def test_session_round_trip_through_redis(
    backend: RedisBackend, other_backend: RedisBackend, redis_server: RedisServer
) -> None:
    state = _played("rt1", time.time())
    await backend.sessions(max_sessions=100, ttl_s=600.0).put(state)
    restored = await other_backend.sessions(max_sessions=100, ttl_s=600.0).get("rt1")
    assert restored == state  # every field, the estimator's EWMAs included
    assert restored.to_dict() == state.to_dict()
    with redis_server.client() as client:
        record = client.get("cadenza:session:rt1")
        assert isinstance(record, bytes)
        assert json.loads(record)["sid"] == "rt1"
        client.set("cadenza:session:junk", b"not json")
    store = other_backend.sessions(max_sessions=100, ttl_s=600.0)
    assert await store.get("nobody") is None
    assert await store.get("junk") is None  # unreadable records are no sessions


async def test_decisions_keep_their_delivery_through_redis(
    backend: RedisBackend, other_backend: RedisBackend, redis_server: RedisServer
) -> None:
    """Each decision's delivery (redirect or the bytes served) is in the shared record,
    so another replica reports it; a decision recorded without one reads as None."""
    decided = (
        DecisionRecord(1, "aac-64k", 64_000, Reason.START_DEFAULT, Delivery.DIRECT),
        DecisionRecord(2, "aac-320k", 320_000, Reason.MPC, Delivery.REDIRECT),
        DecisionRecord(3, "aac-320k", 320_000, Reason.MPC),
    )
    state = dataclasses.replace(_played("dl1", time.time()), decisions=decided)
    await backend.sessions(max_sessions=100, ttl_s=600.0).put(state)
    restored = await other_backend.sessions(max_sessions=100, ttl_s=600.0).get("dl1")
    assert restored is not None and restored.decisions == decided
    reported = restored.to_dict()["decisions"]
    assert isinstance(reported, list)
    assert [d["delivery"] for d in reported] == ["direct", "redirect", None]
    with redis_server.client() as client:
        record = client.get("cadenza:session:dl1")
        assert isinstance(record, bytes)
        stored = [d["delivery"] for d in json.loads(record)["decisions"]]
        assert stored == ["direct", "redirect", None]


async def test_sessions_expire_after_the_ttl(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    store = backend.sessions(max_sessions=100, ttl_s=0.4)
    state = _played("ttl1", time.time())
    await store.put(state)
    with redis_server.client() as client:
        remaining_ms = client.pttl("cadenza:session:ttl1")
    assert isinstance(remaining_ms, int) and 0 < remaining_ms <= 400
    assert await store.get("ttl1") == state
    assert await store.count() == 1

    async def expired() -> bool:
        return await store.get("ttl1") is None

    await wait_for_async(expired, "the session expired by Redis's clock")
    assert await store.count() == 0
    assert await store.active() == []


async def test_active_and_count_are_bounded_by_sessions_max(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    store = backend.sessions(max_sessions=5, ttl_s=600.0)
    now = time.time()
    for index in range(12):
        sid = f"b{index:02d}"
        await store.put(SessionState(sid=sid, first_seen_s=now, last_seen_s=now - 60 + index))
    assert await store.count() == 5
    active = await store.active()
    assert [s.sid for s in active] == ["b11", "b10", "b09", "b08", "b07"]  # newest first
    assert await store.get("b00") is None  # trimmed sessions are forgotten, records too
    with redis_server.client() as client:
        assert client.zcard("cadenza:sessions") == 5
        assert len(client.keys("cadenza:session:*")) == 5


async def test_population_priors_agree_across_replicas(
    backend: RedisBackend, other_backend: RedisBackend
) -> None:
    clock = itertools.count(time.time(), 0.001).__next__  # strictly increasing times
    first = backend.population(per_key=8, clock=clock)
    second = other_backend.population(per_key=8, clock=clock)
    memory = MemoryPopulationStore(per_key=8)
    rng = random.Random(7)
    key = "net:10.0.0.0/24"
    latest: dict[str, float] = {}
    for index in range(20):
        sid = f"p{index % 14}"  # six sessions report twice: the latest estimate counts
        estimate = rng.uniform(64_000, 5_000_000)
        await (first if index % 2 else second).record(key, sid, estimate)
        await memory.record(key, sid, estimate)
        latest.pop(sid, None)
        latest[sid] = estimate
    await first.record("ect:4g", "q1", 2_000_000.0)
    kept = list(latest.values())[-8:]  # the eight most recently updated sessions
    prior_first, prior_second = await first.prior(key), await second.prior(key)
    assert prior_first is not None and prior_first.sessions == 8
    assert prior_first == prior_second == population_of(key, kept)
    assert prior_first == await memory.prior(key)  # the same semantics as one process
    assert sorted(await first.samples()) == sorted(await second.samples())
    assert sorted(await second.samples()) == sorted([*kept, 2_000_000.0])
    assert await second.prior("net:192.0.2.0/24") is None


async def test_damaged_population_estimates_are_skipped_not_errors(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    """Hand-edited or foreign values in a prior's hash must not turn manifests into 500s."""
    store = backend.population(per_key=8)
    key = "net:10.0.0.0/24"
    await store.record(key, "good", 640_000.0)
    with redis_server.client() as client:
        for sid, junk in (("a", b"not a number"), ("b", b"nan"), ("c", b"-5"), ("d", b"\xff")):
            client.hset(f"cadenza:population:{key}:estimates", sid, junk)
    assert await store.prior(key) == population_of(key, [640_000.0])
    assert await store.samples() == [640_000.0]


async def test_a_dead_redis_is_a_store_error_not_a_stall() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    try:
        with pytest.raises(StoreUnavailableError) as raised:
            await backend.sessions(max_sessions=10, ttl_s=60.0).get("s")
        assert raised.value.backend == "redis"
        # What bounds the wait, not how long it took (that is the stress case below):
        # the configured timeout for the connect and every round trip, and none of
        # redis-py's retries.
        options = backend.client.connection_pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.2, 0.2)
        retry = backend.client.get_retry()
        assert retry is not None and retry.get_retries() == 0
    finally:
        await backend.close()


@pytest.mark.stress
async def test_a_dead_redis_fails_well_within_redis_py_s_default_timeout() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await backend.sessions(max_sessions=10, ttl_s=60.0).get("s")
        # Not redis-py's defaults (a 5 s socket timeout, retried): the bound sits below
        # them, far above the 0.2 s configured.
        assert time.monotonic() - started < REDIS_DEFAULT_TIMEOUT_S - 1.0
    finally:
        await backend.close()


async def test_health_backs_off_then_lets_one_request_probe() -> None:
    now = [100.0]
    pings: list[float] = []

    async def ping() -> None:
        pings.append(now[0])
        raise StoreUnavailableError("connection refused", "redis")

    metrics = create_metrics()
    health = StoreHealth(ping, retry_s=5.0, metrics=metrics, clock=lambda: now[0])
    assert await health.check() is False
    assert metrics.registry.get_sample_value("cadenza_redis_up") == 0.0
    assert health.attempt() is None  # in back-off: nobody waits on Redis
    assert await health.check() is False and pings == [100.0]
    now[0] = 104.9
    assert health.attempt() is None
    now[0] = 105.0
    assert health.attempt() == 105.0  # this caller probes ...
    assert health.attempt() is None  # ... and only this one
    health.succeeded(105.0)
    assert health.up and health.outages == 1
    assert metrics.registry.get_sample_value("cadenza_redis_up") == 1.0


def test_redis_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {"CADENZA_REDIS_URL": "redis://10.0.0.5:6380/2", "CADENZA_REDIS_TIMEOUT_S": "0.1"}
    settings = load_settings({"root": str(tmp_path)}, env=env)
    assert settings.redis_url == "redis://10.0.0.5:6380/2"
    assert (settings.redis_timeout_s, settings.redis_retry_s) == (0.1, 5.0)
    assert load_settings({"root": str(tmp_path)}, env={}).redis_url is None
    with pytest.raises(SettingsError, match="redis_url"):
        load_settings({"root": str(tmp_path)}, env={"CADENZA_REDIS_URL": "http://x:6379"})


# -- origins sharing a Redis --------------------------------------------------------


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[Any]:
    """``await origin(**settings)`` -> a started TestClient over an empty ROOT."""
    clients: list[TestClient[Any, Any]] = []

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        settings = Settings(root=str(tmp_path), **{"redis_timeout_s": TIMEOUT_S, **overrides})
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _beacon(client: Any, sid: str, **values: object) -> None:
    response = await client.post("/v1/beacons", json={"sid": sid, **values})
    assert response.status == 204, await response.text()


async def _session(client: Any, sid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{sid}")
    assert response.status == 200, await response.text()
    report: dict[str, Any] = await response.json()
    return report


async def _metric(client: Any, sample: str) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_two_origins_share_sessions(origin: Any, redis_server: RedisServer) -> None:
    first = await origin(redis_url=redis_server.url)
    second = await origin(redis_url=redis_server.url)
    await _beacon(first, "shared1", mtp=900, bl=3000, br=128, ot="a", d=4000)
    report = await _session(second, "shared1")
    assert (report["beacons"], report["last_mtp_kbps"], report["last_bl_ms"]) == (1, 900, 3000)
    await _beacon(second, "shared1", mtp=400, bl=1000)
    report = await _session(first, "shared1")  # the shared state is newer than first's own
    assert (report["beacons"], report["last_mtp_kbps"], report["last_bl_ms"]) == (2, 400, 1000)
    listing = await (await first.get("/v1/sessions")).json()
    assert [s["sid"] for s in listing["sessions"]] == ["shared1"]
    with redis_server.client() as client:  # the throughput went to the shared population
        assert client.hexists("cadenza:population:net:127.0.0.0/24:estimates", "shared1")
    ready = await second.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["redis"] == "up"
    assert await _metric(second, "cadenza_redis_up") == 1.0
    assert await _metric(first, 'cadenza_redis_fallbacks_total{store="sessions"}') == 0.0
    alone = await origin()  # control: without Redis nothing is shared
    assert (await alone.get("/v1/sessions/shared1")).status == 404


async def test_concurrent_beacons_of_one_session_are_all_counted(
    origin: Any, redis_server: RedisServer
) -> None:
    """Each beacon reads, changes and writes its session; with Redis those awaits
    interleave, and without a per-session lock most of these would be lost."""
    client = await origin(redis_url=redis_server.url, beacon_rate_per_s=1000.0, beacon_burst=100)
    await asyncio.gather(*(_beacon(client, "busy1", mtp=500 + i, bl=1000) for i in range(40)))
    assert (await _session(client, "busy1"))["beacons"] == 40


async def test_sessions_trimmed_in_redis_are_counted_as_evicted(
    origin: Any, redis_server: RedisServer
) -> None:
    client = await origin(redis_url=redis_server.url, sessions_max=3)
    for index in range(8):
        await _beacon(client, f"ev{index}", mtp=500)
    assert await _metric(client, "cadenza_sessions_evicted_total") == 5.0
    listing = await (await client.get("/v1/sessions")).json()
    assert [s["sid"] for s in listing["sessions"]] == ["ev7", "ev6", "ev5"]


async def test_redis_outage_serves_local_state_then_recovers(
    origin: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REDIS_LOGGER)
    # No back-off (its timing is test_health_backs_off_then_lets_one_request_probe's, on
    # an injected clock): every operation tries Redis, so each beacon of the outage is a
    # retry that fails again, and the first after the restart finds Redis back.
    client = await origin(redis_url=redis_server.url, redis_retry_s=0.0)
    await _beacon(client, "o1", mtp=800, bl=2000)
    assert (await _session(client, "o1"))["beacons"] == 1
    sent = 1

    redis_server.stop()
    for _ in range(4):  # Redis is retried and fails again: still one warning
        await _beacon(client, "o1", mtp=700, bl=1500)
        sent += 1
    await _beacon(client, "o2", mtp=300)  # a session that begins during the outage
    assert (await _session(client, "o1"))["beacons"] == sent  # local state kept the history
    assert (await _session(client, "o2"))["beacons"] == 1
    assert (await client.get("/v1/sessions")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200  # local state serves: still ready
    assert (await ready.json())["redis"] == "down"
    assert await _metric(client, "cadenza_redis_up") == 0.0
    assert await _metric(client, 'cadenza_redis_fallbacks_total{store="sessions"}') >= sent
    assert await _metric(client, 'cadenza_redis_fallbacks_total{store="population"}') >= 1
    warnings = [
        r for r in caplog.records if r.name == REDIS_LOGGER and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "redis unavailable" in warnings[0].getMessage()

    redis_server.start()  # the same port, empty: nothing was persisted
    with redis_server.client() as shared:

        async def back_in_redis() -> bool:  # recovery needs no restart of the origin
            nonlocal sent
            await _beacon(client, "o1", bl=1000)
            sent += 1
            return bool(shared.exists("cadenza:session:o1"))

        await wait_for_async(back_in_redis, "the origin went back to Redis")
        record = shared.get("cadenza:session:o1")
    assert isinstance(record, bytes)
    assert decode_session(record).beacons == sent  # the outage's updates were carried over
    assert await _metric(client, "cadenza_redis_up") == 1.0
    assert (await (await client.get("/readyz")).json())["redis"] == "up"
    other = await origin(redis_url=redis_server.url)  # and another replica sees them
    assert (await _session(other, "o1"))["beacons"] == sent
    warnings = [
        r for r in caplog.records if r.name == REDIS_LOGGER and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1  # one outage, one warning
    assert any("redis is back" in r.getMessage() for r in caplog.records)


async def _beacons_against_a_silent_redis(origin: Any) -> list[float]:
    """Three beacons to an origin whose Redis accepts connections and never answers,
    with no back-off (every beacon tries Redis): how long each took.  Each must
    succeed from local state."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    elapsed: list[float] = []
    try:
        client = await origin(
            redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.2, redis_retry_s=0.0
        )
        for index in range(3):
            started = time.monotonic()
            await _beacon(client, "silent", mtp=500 + index)
            elapsed.append(time.monotonic() - started)
        assert (await _session(client, "silent"))["beacons"] == 3
        assert await _metric(client, 'cadenza_redis_fallbacks_total{store="sessions"}') >= 3
    finally:
        server.close()
        await server.wait_closed()
    return elapsed


async def test_a_silent_redis_never_stalls_requests(origin: Any) -> None:
    """A Redis that accepts connections and never answers: each beacon waits on it
    (the configured timeout, a lower bound that load cannot break) and still
    succeeds from local state."""
    elapsed = await _beacons_against_a_silent_redis(origin)
    assert all(seconds > 0.15 for seconds in elapsed), elapsed


@pytest.mark.stress
async def test_a_silent_redis_costs_a_timeout_not_redis_py_s_defaults(origin: Any) -> None:
    """Each try costs the configured 0.2 s, not redis-py's defaults (5 s, retried): the
    bound sits below those, far above the timeouts one beacon spends."""
    elapsed = await _beacons_against_a_silent_redis(origin)
    assert all(seconds < REDIS_DEFAULT_TIMEOUT_S - 1.0 for seconds in elapsed), elapsed


# -- two real processes ----------------------------------------------------------------


@contextlib.contextmanager
def _serve(root: Path, port: int, redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CADENZA_", "PROMETHEUS_"))}
    env["CADENZA_REDIS_URL"] = redis_url
    process = subprocess.Popen(
        [sys.executable, "-m", "cadenza", "serve", str(root), "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


async def _wait_ready(session: aiohttp.ClientSession, base: str, process: Any) -> None:
    deadline = time.monotonic() + 30.0
    while True:  # bounded: the deadline, or the process's exit
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"cadenza serve at {base} did not start: {process.stderr.read()[-2000:]!r}")
        await asyncio.sleep(0.1)


async def test_two_serve_processes_share_sessions(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ports = (free_port(), free_port())
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    with (
        _serve(tmp_path, ports[0], redis_server.url) as one,
        _serve(tmp_path, ports[1], redis_server.url) as two,
    ):
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, bases[0], one)
            await _wait_ready(session, bases[1], two)
            body = 'e=t,sid="proc1",bl=4200,mtp=1500\n'
            headers = {"Content-Type": "application/cmcd"}
            async with session.post(f"{bases[0]}/v1/beacons", data=body, headers=headers) as sent:
                assert sent.status == 204
            async with session.get(f"{bases[1]}/v1/sessions/proc1") as response:
                assert response.status == 200
                report = await response.json()
            assert (report["beacons"], report["last_bl_ms"]) == (1, 4200)
            async with session.get(f"{bases[1]}/readyz") as ready:
                assert (await ready.json())["redis"] == "up"


def test_a_bad_redis_url_is_not_echoed_with_its_password(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"root": str(tmp_path)}, env={"CADENZA_REDIS_URL": "http://u:hunter2@x"})
    assert "hunter2" not in str(caught.value)
    assert "redis://" in str(caught.value)
