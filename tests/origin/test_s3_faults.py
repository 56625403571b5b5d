"""Storage faults under load: S3 slow, answering 500, dead, or dropping answers
mid-body, between a real ``cadenza serve s3://...`` and moto.

A :class:`~tests.origin.faultproxy.FaultProxy` on 127.0.0.1 sits between the
origin (``AWS_ENDPOINT_URL`` points at it) and the moto server.  For each mode,
50 concurrent connections ask for a mix of objects the origin has cached and
objects it has not, for a few seconds:

- uncached objects answer ``504`` (slow: past ``storage_timeout_s``) or ``503``
  (500s, refused, dropped connections), always with ``Retry-After`` and the
  JSON error, and never a hang: every answer arrives within 10x the timeout
  (a bound generous enough to say "no hang" without being a timing test);
- cached objects keep answering ``200``/``206``, manifests past their TTL
  included (stale-if-error);
- ``/readyz`` says not ready (``503``) while S3 is slow, failing or dead;
- back to pass-through, every object is served again, by the same process.

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
from collections.abc import AsyncIterator
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

TIMEOUT_S: Final = 1.0  # the origin's storage_timeout_s
SLOW_DELAY_S: Final = 5.0  # what ``slow`` adds: well past the timeout (and its 2x bound)
HANG_BOUND_S: Final = 10 * TIMEOUT_S  # an answer later than this is a hang
RETRY_AFTER_S: Final = 3
MANIFEST_TTL_S: Final = 1  # manifests go stale within each phase
CLIENTS: Final = 50
PHASE_S: Final = 3.0
SETTLE_S: Final = 0.3  # after a switch, before the phase's load starts
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


@dataclass(frozen=True, slots=True)
class Ask:
    kind: str  # "cached" or "uncached"
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    ask: Ask
    status: int | None  # None: no answer (a client timeout or a transport error)
    elapsed_s: float
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


async def _load(
    session: aiohttp.ClientSession, base: str, asks: list[Ask], seconds: float
) -> list[Outcome]:
    """CLIENTS workers, each going round ``asks`` from its own place until the
    deadline (each request is bounded by the session's timeout)."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds

    async def worker(start: int) -> None:
        n = start
        while time.monotonic() < deadline:
            outcomes.append(await _ask(session, base, asks[n % len(asks)]))
            n += 1

    await asyncio.gather(*(worker(i * 7) for i in range(CLIENTS)))
    return outcomes


async def _readyz(session: aiohttp.ClientSession, base: str, seconds: float) -> list[Outcome]:
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded: the deadline (each probe by the timeout)
        outcomes.append(await _ask(session, base, Ask("readyz", "/readyz")))
        await asyncio.sleep(0.5)
    return outcomes


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


@pytest.mark.slow
async def test_storage_faults_under_load(
    proxy: FaultProxy, packaged_root: Path, tmp_path: Path
) -> None:
    cached, uncached = _plan(packaged_root)
    mix = [ask for pair in zip(cached * 2, uncached * 2, strict=False) for ask in pair]
    mix += cached  # every cached object at least once per round
    random.Random(3).shuffle(mix)
    report: dict[str, Any] = {}
    with cadenza_serve(
        f"s3://{BUCKET}/{PREFIX}",
        tmp_path,
        env={"AWS_ENDPOINT_URL": proxy.url},
        storage_timeout_s=TIMEOUT_S,
        retry_after_s=RETRY_AFTER_S,
        manifest_max_age_s=MANIFEST_TTL_S,
    ) as origin:
        base = origin.url
        timeout = aiohttp.ClientTimeout(total=HANG_BOUND_S)
        connector = aiohttp.TCPConnector(limit=CLIENTS + 5)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for ask in cached:  # fill the cache with the cached half
                outcome = await _ask(session, base, ask)
                assert outcome.status in (200, 206), outcome
            assert (await _ask(session, base, Ask("readyz", "/readyz"))).status == 200

            for mode, (status, code) in UNCACHED_ANSWER.items():
                await proxy.set_mode(mode)
                await asyncio.sleep(SETTLE_S)
                outcomes, probes = await asyncio.gather(
                    _load(session, base, mix, PHASE_S), _readyz(session, base, PHASE_S)
                )
                report[mode.value] = {**_summary(outcomes), "readyz": _summary(probes)["answers"]}
                unanswered = [o for o in outcomes if o.status is None]
                assert not unanswered, (mode, unanswered[:5])
                assert all(o.elapsed_s < HANG_BOUND_S for o in outcomes)
                wrong_cached = [o for o in outcomes if o.ask.kind == "cached"
                                and o.status not in (200, 206)]  # fmt: skip
                assert not wrong_cached, (mode, wrong_cached[:5])
                failed = [o for o in outcomes if o.ask.kind == "uncached"]
                assert failed, mode
                wrong = [o for o in failed if (o.status, o.error) not in STORAGE_ANSWERS
                         or o.retry_after != str(RETRY_AFTER_S)]  # fmt: skip
                assert not wrong, (mode, wrong[:5])
                # The mode's own answer dominates; the other one is not wrong (a request at
                # the switch, or a loaded machine slower than the timeout).
                typical = sum((o.status, o.error) == (status, code) for o in failed)
                assert typical > len(failed) / 2, (mode, report[mode.value])
                if mode in NOT_READY_IN:
                    assert probes
                    assert all(p.status == 503 and p.retry_after for p in probes), (mode, probes)

            await proxy.set_mode(Mode.PASS)
            recovery_started = time.monotonic()
            for ask in uncached:  # bounded: 50 tries each, without restarting the origin
                for _ in range(50):
                    outcome = await _ask(session, base, ask)
                    if outcome.status == 200:
                        break
                    await asyncio.sleep(0.2)
                assert outcome.status == 200, outcome
            report["recovery_s"] = round(time.monotonic() - recovery_started, 2)
            outcomes, probes = await asyncio.gather(
                _load(session, base, mix, PHASE_S), _readyz(session, base, PHASE_S)
            )
            report["pass"] = {**_summary(outcomes), "readyz": _summary(probes)["answers"]}
            assert all(o.status in (200, 206) for o in outcomes), _summary(outcomes)
            assert all(p.status == 200 for p in probes)
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


# -- fast regressions, in process ---------------------------------------------


@pytest.fixture
async def s3_client(proxy: FaultProxy) -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(
        root=f"s3://{BUCKET}/{PREFIX}",
        s3_endpoint_url=proxy.url,
        storage_timeout_s=0.5,
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
    assert (await s3_client.get(f"/{TRACK}/aac-128k/seg-00002.m4s")).status == 200


async def test_slow_storage_is_504_then_recovers(
    proxy: FaultProxy, s3_client: TestClient[Any, Any]
) -> None:
    """S3 slower than storage_timeout_s: a gateway timeout, not a hang, and ready no more."""
    await proxy.set_mode(Mode.SLOW)
    started = time.monotonic()
    response = await s3_client.get(f"/{TRACK}/opus-128k/init.mp4")
    assert time.monotonic() - started < 10 * 0.5
    assert response.status == 504
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert (await response.json())["error"] == "storage_timeout"
    assert (await s3_client.get("/readyz")).status == 503  # not ready: 503, like any outage
    await proxy.set_mode(Mode.PASS)
    assert (await s3_client.get(f"/{TRACK}/opus-128k/init.mp4")).status == 200
    metrics = await (await s3_client.get("/metrics")).text()
    assert _metric_sum(metrics, r'cadenza_storage_errors_total\{backend="s3",kind="timeout"\}') == 1


async def test_requests_sharing_a_failed_revalidation_get_the_stale_copy() -> None:
    """finding: the request that led a manifest's revalidation got the stale copy
    when storage failed, but those collapsed onto it got the error."""
    cache = HotCache(1 << 20, 1 << 20, manifest_ttl_s=0.01)
    stored = StoredObject(ObjectInfo(8, 0.0, ""), b"#EXTM3U\n")
    old = build_cached("t/master.m3u8", stored, "public, max-age=1")

    async def first_load() -> CachedObject:
        return old

    await cache.get("t/master.m3u8", first_load)
    await asyncio.sleep(0.02)  # past the TTL: the next get revalidates
    release = asyncio.Event()

    async def failing_load() -> CachedObject:
        await release.wait()
        raise StorageUnavailableError("S3 unreachable", "s3")

    async def never_called() -> CachedObject:
        raise AssertionError("a collapsed request loaded by itself")

    leader = asyncio.create_task(cache.get("t/master.m3u8", failing_load))
    await asyncio.sleep(0)  # the leader is now in flight
    followers = [asyncio.create_task(cache.get("t/master.m3u8", never_called)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    answers = await asyncio.gather(leader, *followers)
    assert [how for _, how in answers] == ["stale"] * 4
    assert all(obj is old for obj, _ in answers)
