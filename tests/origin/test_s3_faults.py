"""Storage faults under load: S3 slow, answering 500, dead, or dropping answers
mid-body, between a real ``cadenza serve s3://...`` and moto.

A :class:`~tests.origin.faultproxy.FaultProxy` on 127.0.0.1 sits between the
origin (``AWS_ENDPOINT_URL`` points at it) and the moto server.  For each mode,
once the fault shows (an uncached object answers the mode's error, and
``/readyz`` says not ready where it should), 50 concurrent connections each ask
``REQUESTS_PER_CLIENT`` of a mix of objects the origin has cached, objects it
has not, and ``/readyz`` probes: a fixed amount of work, however slow the machine.

- uncached objects answer ``504`` (slow: past ``storage_timeout_s``) or ``503``
  (500s, refused, dropped connections), always with ``Retry-After`` and the
  JSON error, and never a hang: every request gets an answer;
- cached objects keep answering ``200``/``206``, manifests past their TTL
  included (stale-if-error);
- ``/readyz`` says not ready (``503``) while S3 is slow, failing or dead;
- back to pass-through, every object is served again, by the same process.

Nothing here waits for a while: every wait is on something observable, bounded
by :func:`~tests.origin.waiting.wait_for_async`'s generous deadline.  That every
answer also arrives within 10x the storage timeout is a wall-clock bound, which
a loaded machine breaks without any fault in the origin: the ``stress`` case
checks it (``make stress``).

Fast in-process tests pin the bugs these found: a connection dropped mid-body
was a ``500``, and requests that shared a failed revalidation got an error
instead of the stale copy.  ``moto killed`` is also in ``test_s3_outage.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cadenza.origin.app import create_app
from cadenza.origin.cache import CachedObject, HotCache, build_cached
from cadenza.origin.errors import StorageUnavailableError
from cadenza.origin.settings import Settings
from cadenza.origin.storage import ObjectInfo, StoredObject
from tests.origin.conftest import BUCKET, PREFIX, TRACK, Moto
from tests.origin.faultproxy import FaultProxy, Mode
from tests.origin.originproc import cadenza_serve
from tests.origin.waiting import DEFAULT_TIMEOUT_S, wait_for_async

TIMEOUT_S: Final = 1.0  # the origin's storage_timeout_s
# The in-process regressions' storage_timeout_s: under SLOW_DELAY_S, and long enough
# that moto on a loaded machine answers a passed-through request well within it (at
# 0.5 s a fresh-clone CI run beside a busy process saw a recovered object time out).
IN_PROCESS_TIMEOUT_S: Final = 2.0
SLOW_DELAY_S: Final = 5.0  # what ``slow`` adds: well past the timeout
HANG_BOUND_S: Final = 10 * TIMEOUT_S  # the stress case: an answer later than this is a hang
RETRY_AFTER_S: Final = 3
# Manifests go stale during the faults: no longer than the storage timeout, which
# the first slow answer (and every slow one after it) takes at the least.
MANIFEST_TTL_S: Final = 1
CLIENTS: Final = 50
REQUESTS_PER_CLIENT: Final = 12  # per phase; together, the whole mix at least once
READYZ_EVERY: Final = 10  # one /readyz probe in the mix for every this many objects
# What an object the origin has not cached answers in each fault mode.
UNCACHED_ANSWER: Final = {
    Mode.SLOW: (504, "storage_timeout"),
    Mode.ERROR: (503, "storage_unavailable"),
    Mode.DEAD: (503, "storage_unavailable"),
    Mode.CUT: (503, "storage_unavailable"),
}
STORAGE_ANSWERS: Final = frozenset({(503, "storage_unavailable"), (504, "storage_timeout")})
# Storage down: not ready.  ``cut`` drops bodies only; HEAD Bucket (the probe) still works.
NOT_READY_IN: Final = frozenset({Mode.SLOW, Mode.ERROR, Mode.DEAD})
READYZ: Final = "/readyz"


@dataclass(frozen=True, slots=True)
class Ask:
    kind: str  # "cached", "uncached" or "readyz"
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    ask: Ask
    status: int | None  # None: no answer (a client timeout or a transport error)
    elapsed_s: float  # reported, and bounded by the stress case only
    retry_after: str | None
    error: str | None  # the JSON error code, or what went wrong on the client side


def _plan(root: Path) -> tuple[list[Ask], list[Ask]]:
    """Cached: the track's manifests (plain and filtered) and every other
    rendition; uncached: the remaining renditions, never asked for before the
    faults."""
    track = root / TRACK
    renditions = sorted(p.name for p in track.iterdir() if p.is_dir())
    cached = [
        Ask("cached", f"/{TRACK}/master.m3u8"),
        Ask("cached", f"/{TRACK}/manifest.mpd"),
        Ask("cached", f"/{TRACK}/master.m3u8?codec=aac"),
    ]
    uncached: list[Ask] = []
    for n, rendition in enumerate(renditions):
        for path in sorted((track / rendition).iterdir()):
            key = f"/{TRACK}/{rendition}/{path.name}"
            if n % 2:
                uncached.append(Ask("uncached", key))
            else:
                cached.append(Ask("cached", key))
                if path.suffix == ".m4s":
                    cached.append(Ask("cached", key, (("Range", "bytes=0-99"),)))
    return cached, uncached


def _mix(cached: list[Ask], uncached: list[Ask]) -> list[Ask]:
    """Cached and uncached objects interleaved, every cached one at least once,
    shuffled (seeded), with a ``/readyz`` probe every ``READYZ_EVERY`` asks."""
    objects = [ask for pair in zip(cached * 2, uncached * 2, strict=False) for ask in pair]
    objects += cached
    random.Random(3).shuffle(objects)
    mix: list[Ask] = []
    for n, ask in enumerate(objects):
        if n % READYZ_EVERY == 0:
            mix.append(Ask("readyz", READYZ))
        mix.append(ask)
    return mix


async def _ask(session: aiohttp.ClientSession, base: str, ask: Ask) -> Outcome:
    started = time.monotonic()
    try:
        async with session.get(base + ask.path, headers=dict(ask.headers)) as response:
            body = await response.read()
            code = None
            if response.content_type == "application/json":
                code = json.loads(body).get("error")
            return Outcome(
                ask,
                response.status,
                time.monotonic() - started,
                response.headers.get("Retry-After"),
                code,
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(ask, None, time.monotonic() - started, None, repr(exc))


def _answering(status: int, code: str | None = None) -> Callable[[Outcome], bool]:
    """Whether an outcome is ``status`` (with the JSON error ``code``, if given)."""
    return lambda o: o.status == status and (code is None or o.error == code)


async def _ask_until(
    session: aiohttp.ClientSession, base: str, ask: Ask, wanted: Callable[[Outcome], bool]
) -> Outcome:
    """Ask ``ask`` again and again until an answer is ``wanted`` (bounded by
    :func:`wait_for_async`'s deadline, which only a hang reaches)."""

    async def answer() -> Outcome | None:
        outcome = await _ask(session, base, ask)
        return outcome if wanted(outcome) else None

    return await wait_for_async(answer, f"{ask.path} answering as wanted")


async def _load(session: aiohttp.ClientSession, base: str, asks: list[Ask]) -> list[Outcome]:
    """CLIENTS workers at once, each asking ``REQUESTS_PER_CLIENT`` of ``asks`` in
    turn from its own place (spread evenly, so that together they cover all of
    ``asks``); each request is bounded by the session's timeout."""
    assert len(asks) <= CLIENTS * REQUESTS_PER_CLIENT

    async def worker(start: int) -> list[Outcome]:
        return [
            await _ask(session, base, asks[(start + n) % len(asks)])
            for n in range(REQUESTS_PER_CLIENT)
        ]

    starts = [i * len(asks) // CLIENTS for i in range(CLIENTS)]
    rounds = await asyncio.gather(*(worker(start) for start in starts))
    return [outcome for outcomes in rounds for outcome in outcomes]


def _summary(outcomes: list[Outcome]) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = {}
    slowest: dict[str, float] = {}
    for outcome in outcomes:
        label = str(outcome.status) if outcome.status is not None else "no answer"
        by_kind.setdefault(outcome.ask.kind, Counter())[label] += 1
        slowest[outcome.ask.kind] = max(slowest.get(outcome.ask.kind, 0.0), outcome.elapsed_s)
    return {
        "answers": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "slowest_s": {kind: round(s, 3) for kind, s in sorted(slowest.items())},
    }


def _metric_sum(text: str, pattern: str) -> float:
    return sum(float(v) for v in re.findall(pattern + r" (\S+)$", text, re.MULTILINE))


@pytest.fixture
async def proxy(moto: Moto) -> AsyncIterator[FaultProxy]:
    server = FaultProxy(moto.port, slow_delay_s=SLOW_DELAY_S)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def _check_fault_phase(mode: Mode, outcomes: list[Outcome]) -> None:
    status, code = UNCACHED_ANSWER[mode]
    unanswered = [o for o in outcomes if o.status is None]
    assert not unanswered, (mode, unanswered[:5])
    wrong_cached = [o for o in outcomes if o.ask.kind == "cached" and o.status not in (200, 206)]
    assert not wrong_cached, (mode, wrong_cached[:5])
    failed = [o for o in outcomes if o.ask.kind == "uncached"]
    assert failed, mode
    wrong = [o for o in failed if (o.status, o.error) not in STORAGE_ANSWERS
             or o.retry_after != str(RETRY_AFTER_S)]  # fmt: skip
    assert not wrong, (mode, wrong[:5])
    # The mode's own answer dominates; the other one is not wrong (a loaded machine
    # can be slower than the timeout).
    typical = sum((o.status, o.error) == (status, code) for o in failed)
    assert typical > len(failed) / 2, (mode, _summary(outcomes))
    probes = [o for o in outcomes if o.ask.kind == "readyz"]
    assert probes, mode
    if mode in NOT_READY_IN:
        assert all(p.status == 503 and p.retry_after for p in probes), (mode, probes[:5])


async def _storage_faults_under_load(
    proxy: FaultProxy, packaged_root: Path, tmp_path: Path, *, client_timeout_s: float
) -> list[Outcome]:
    """The whole scenario (see the module docstring), checked; every outcome."""
    cached, uncached = _plan(packaged_root)
    mix = _mix(cached, uncached)
    report: dict[str, Any] = {}
    everything: list[Outcome] = []
    with cadenza_serve(
        f"s3://{BUCKET}/{PREFIX}",
        tmp_path,
        env={"AWS_ENDPOINT_URL": proxy.url},
        storage_timeout_s=TIMEOUT_S,
        retry_after_s=RETRY_AFTER_S,
        manifest_max_age_s=MANIFEST_TTL_S,
    ) as origin:
        base = origin.url
        timeout = aiohttp.ClientTimeout(total=client_timeout_s)
        connector = aiohttp.TCPConnector(limit=CLIENTS + 5)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for ask in cached:  # fill the cache with the cached half
                outcome = await _ask(session, base, ask)
                assert outcome.status in (200, 206), outcome
            assert (await _ask(session, base, Ask("readyz", READYZ))).status == 200

            for mode, (status, code) in UNCACHED_ANSWER.items():
                await proxy.set_mode(mode)
                # The fault shows before the load starts: no request straddles the switch.
                await _ask_until(session, base, uncached[0], _answering(status, code))
                if mode in NOT_READY_IN:
                    await _ask_until(session, base, Ask("readyz", READYZ), _answering(503))
                outcomes = await _load(session, base, mix)
                everything += outcomes
                report[mode.value] = _summary(outcomes)
                _check_fault_phase(mode, outcomes)

            await proxy.set_mode(Mode.PASS)
            recovery_started = time.monotonic()
            for ask in uncached:  # without restarting the origin
                await _ask_until(session, base, ask, _answering(200))
            report["recovery_s"] = round(time.monotonic() - recovery_started, 2)
            outcomes = await _load(session, base, mix)
            everything += outcomes
            report["pass"] = _summary(outcomes)
            objects = [o for o in outcomes if o.ask.kind != "readyz"]
            assert all(o.status in (200, 206) for o in objects), report["pass"]
            assert all(o.status == 200 for o in outcomes if o.ask.kind == "readyz")
            async with session.get(base + "/metrics") as response:
                metrics = await response.text()
        assert origin.process.poll() is None  # the same process throughout
    errors = 'cadenza_storage_errors_total{backend="s3",kind="%s"}'
    assert _metric_sum(metrics, re.escape(errors % "timeout")) > 0
    assert _metric_sum(metrics, re.escape(errors % "unavailable")) > 0
    assert _metric_sum(metrics, r'cadenza_hot_cache_lookups_total\{result="stale"\}') > 0
    report["proxy"] = {"accepted": proxy.accepted, "errors_sent": proxy.errors_sent,
                       "cuts": proxy.cuts, "delayed": proxy.delayed}  # fmt: skip
    (tmp_path / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nstorage faults ({tmp_path / 'faults.json'}):\n{json.dumps(report, indent=2)}")
    return everything


@pytest.mark.slow
async def test_storage_faults_under_load(
    proxy: FaultProxy, packaged_root: Path, tmp_path: Path
) -> None:
    """Every request gets the right answer; a client gives up only on a hang."""
    await _storage_faults_under_load(
        proxy, packaged_root, tmp_path, client_timeout_s=DEFAULT_TIMEOUT_S
    )


@pytest.mark.slow
@pytest.mark.stress
async def test_storage_faults_under_load_answer_within_the_hang_bound(
    proxy: FaultProxy, packaged_root: Path, tmp_path: Path
) -> None:
    """The same, with every answer within 10x the storage timeout."""
    outcomes = await _storage_faults_under_load(
        proxy, packaged_root, tmp_path, client_timeout_s=HANG_BOUND_S
    )
    late = [o for o in outcomes if o.elapsed_s >= HANG_BOUND_S]
    assert not late, late[:5]


# -- fast regressions, in process ---------------------------------------------


@pytest.fixture
async def s3_client(proxy: FaultProxy) -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(
        root=f"s3://{BUCKET}/{PREFIX}",
        s3_endpoint_url=proxy.url,
        storage_timeout_s=IN_PROCESS_TIMEOUT_S,
        retry_after_s=RETRY_AFTER_S,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_body_dropped_mid_stream_is_503(
    proxy: FaultProxy, s3_client: TestClient[Any, Any]
) -> None:
    """finding: S3 resetting the connection mid-body was a 500 ("internal error"):
    aiohttp's ClientPayloadError and botocore's ResponseStreamingError escaped."""
    await proxy.set_mode(Mode.CUT)
    response = await s3_client.get(f"/{TRACK}/aac-128k/seg-00002.m4s")
    assert response.status == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert (await response.json())["error"] == "storage_unavailable"
    assert proxy.cuts > 0
    await proxy.set_mode(Mode.PASS)
    await _served_again(s3_client, f"/{TRACK}/aac-128k/seg-00002.m4s")


async def _served_again(client: TestClient[Any, Any], path: str) -> None:
    """Back to pass-through, ``path`` answers 200 again (waited for: the first request
    after the switch may still meet a connection the fault left behind)."""

    async def ok() -> bool:
        return (await client.get(path)).status == 200

    await wait_for_async(ok, f"{path} served again")


async def test_slow_storage_is_504_then_recovers(
    proxy: FaultProxy, s3_client: TestClient[Any, Any]
) -> None:
    """S3 slower than storage_timeout_s: a gateway timeout, not a wait for S3 (which
    would answer 200 once the proxy lets the request through), and ready no more."""
    await proxy.set_mode(Mode.SLOW)
    response = await s3_client.get(f"/{TRACK}/opus-128k/init.mp4")
    assert response.status == 504
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert (await response.json())["error"] == "storage_timeout"
    assert proxy.delayed > 0  # the request was held back, not refused
    assert (await s3_client.get("/readyz")).status == 503  # not ready: 503, like any outage
    # One timeout counted, before the recovery (whose waits may meet more on a loaded machine).
    metrics = await (await s3_client.get("/metrics")).text()
    assert _metric_sum(metrics, r'cadenza_storage_errors_total\{backend="s3",kind="timeout"\}') == 1
    await proxy.set_mode(Mode.PASS)
    await _served_again(s3_client, f"/{TRACK}/opus-128k/init.mp4")


@pytest.mark.stress
async def test_slow_storage_answers_within_the_hang_bound(
    proxy: FaultProxy, s3_client: TestClient[Any, Any]
) -> None:
    """The 504 arrives within 2.5x storage_timeout_s: a wall-clock bound (and under
    the proxy's delay, which a wait for S3 would take)."""
    await proxy.set_mode(Mode.SLOW)
    started = time.monotonic()
    response = await s3_client.get(f"/{TRACK}/opus-128k/init.mp4")
    assert response.status == 504
    assert time.monotonic() - started < 2.5 * IN_PROCESS_TIMEOUT_S < SLOW_DELAY_S


async def test_requests_sharing_a_failed_revalidation_get_the_stale_copy() -> None:
    """finding: the request that led a manifest's revalidation got the stale copy
    when storage failed, but those collapsed onto it got the error."""
    now_s = [100.0]

    def clock() -> float:
        return now_s[0]

    key = "t/master.m3u8"
    cache = HotCache(1 << 20, 1 << 20, manifest_ttl_s=1.0, clock=clock)
    stored = StoredObject(ObjectInfo(8, 0.0, ""), b"#EXTM3U\n")
    old = build_cached(key, stored, "public, max-age=1", clock=clock)

    async def first_load() -> CachedObject:
        return old

    await cache.get(key, first_load)
    now_s[0] += 0.5
    assert cache.hot(key) is old  # within the TTL
    now_s[0] += 0.5
    assert cache.hot(key) is None  # past the TTL: the next get revalidates
    loading = asyncio.Event()
    release = asyncio.Event()

    async def failing_load() -> CachedObject:
        loading.set()
        await release.wait()
        raise StorageUnavailableError("S3 unreachable", "s3")

    async def never_called() -> CachedObject:
        raise AssertionError("a collapsed request loaded by itself")

    async def all_collapsed() -> bool:
        return cache.collapsed == 3

    leader = asyncio.create_task(cache.get(key, failing_load))
    await loading.wait()  # the leader's revalidation is in flight
    followers = [asyncio.create_task(cache.get(key, never_called)) for _ in range(3)]
    await wait_for_async(all_collapsed, "three requests waiting on the leader's load")
    release.set()
    answers = await asyncio.gather(leader, *followers)
    assert [how for _, how in answers] == ["stale"] * 4
    assert all(obj is old for obj, _ in answers)
