"""The origin-decided hot path (``?abr=origin``): CPU per decided segment request,
against the plain hot hit of a 64 KB segment in the same run, and the memory of
100,000 sessions.

A decided request is ``<track>/group-aac/seg-NNNNN.m4s?sid=...&CMCD=...``: its
CMCD folded into the session, :func:`cadenza.abr.controller.decide_rung`, the
decision stored, and a ``302`` to the chosen rung's URL.  Budget: 100 us of
origin CPU per decided request, decision included.

- In process: the fast transport's answer core
  (:class:`cadenza.origin.transport.responder.HotResponder`, the entry both
  the socket loop and its loads go through) of an app from ``create_app`` over
  a packaged track: a decided request's head in, the ``302`` head out, each
  request the next segment number of one session with a player's CMCD (``bl``,
  ``br``, ``cid``, ``d``, ``mtp``, ``ot``, ``sf``, ``sid``, ``st``, ``v``);
  against the plain hit's head-and-body lookup.  CPU from
  ``time.process_time`` (the loop yields every :data:`TURN` requests, so the
  metrics counted per loop turn are paid too); no socket I/O on either side.
- Under wrk: ``cadenza serve`` (1 worker, access log off) on loopback, ``wrk
  -t2 -c64 --latency -s bench/decided.lua`` (64 sessions, each asking for its
  next segment) against plain ``wrk`` on the hot 64 KB segment, alternating; req/s,
  p99, and the server's CPU per request (``utime + stime`` of its process
  group from ``/proc``, over each run, divided by the requests wrk counted).
- Memory: a fresh process fills a
  :class:`~cadenza.origin.sessions.MemorySessionStore` with 100,000 sessions,
  each folded from :data:`DECISIONS` segment requests through the origin's own
  functions (``apply_cmcd``, ``decide_rung``, ``decision_fields``); the VmRSS
  it grew (``/proc/self/status``, after ``gc.collect``) per session, against
  the same sessions after one request and no decision.

Run standalone: ``.venv/bin/python -m bench.decided_bench`` (runs=3, 5 s
each); ``--profile`` prints the in-process decided request's top costs
(cProfile).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import http.client
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from bench import http_bench
from bench.common import Row, group_cpu_s, median

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "decided.lua"
GROUP = "aac"
RUNGS = ("aac-64k", "aac-128k", "aac-256k", "aac-320k")
BUDGET_US = 100.0
GOAL = f"<= {BUDGET_US:.0f} us CPU per decided request"
REMOTE = "127.0.0.1"
# Requests answered per event-loop turn in process (as 64 connections' would be).
TURN = 64
IN_PROCESS_REQUESTS = 20_000
# wrk: 2 threads of 32 sessions each (the Lua script's sessions are per thread).
SESSIONS_PER_THREAD = http_bench.CONNECTIONS // http_bench.THREADS
# The app's clock steps this much per decided request: a player filling its buffer.
CLOCK_STEP_S = 2.0
MEMORY_SESSIONS = 100_000
DECISIONS = 10
SEGMENT_S = 4.0
LADDER_BPS = (64_000, 128_000, 256_000, 320_000)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)


def log(message: str) -> None:
    print(f"[decided_bench] {message}", file=sys.stderr, flush=True)


def cmcd_payload(index: int, track: str, sid: str) -> str:
    """A player's request CMCD (CTA-5004, keys in order), its buffer and measured
    throughput moving with ``index`` as in ``bench/decided.lua``."""
    bl_ms = 4000 + (index * 7919) % 26000
    mtp_kbps = 300 + (index * 104729) % 3000
    return f'bl={bl_ms},br=128,cid="{track}",d=4000,mtp={mtp_kbps},ot=a,sf=h,sid="{sid}",st=v,v=1'


def decided_path(track: str, number: int, sid: str, index: int) -> str:
    cmcd = quote(cmcd_payload(index, track, sid), safe="")
    return f"/{track}/group-{GROUP}/seg-{number:05d}.m4s?sid={sid}&CMCD={cmcd}"


def request_head(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {REMOTE}\r\nUser-Agent: bench\r\n\r\n".encode("latin-1")


def segment_count(package: http_bench.Package) -> int:
    return len(list((package.root / package.track / RUNGS[0]).glob("seg-*.m4s")))


# --------------------------------------------------------------------------- in process


class SteppingClock:
    """The app's clock: :data:`CLOCK_STEP_S` later at every reading (decide_segment
    reads it once per decided request)."""

    def __init__(self) -> None:
        self.now_s = 1_000_000.0

    def __call__(self) -> float:
        self.now_s += CLOCK_STEP_S
        return self.now_s


@dataclass(frozen=True, slots=True)
class InProcess:
    decided_us: list[float]
    hit_us: list[float]
    requests: int


class _Core:
    """The fast transport's answer core over a started app (no listening socket)."""

    def __init__(self, package: http_bench.Package) -> None:
        self.package = package

    async def __aenter__(self) -> _Core:
        # Imported here: the origin is heavy, and the wrk half runs it in its own process.
        from aiohttp import web

        from cadenza.origin.app import create_app
        from cadenza.origin.settings import AbrDelivery, Settings
        from cadenza.origin.tcp_info import Connection
        from cadenza.origin.transport.parse import HeadParser
        from cadenza.origin.transport.responder import HotResponder

        # The redirect: every decided request answered alike (the default, adaptive,
        # serves a slow session's bytes).
        settings = Settings(root=str(self.package.root), abr_delivery=AbrDelivery.REDIRECT)
        app = create_app(settings, clock=SteppingClock())
        self.runner = web.AppRunner(app)
        await self.runner.setup()  # the storage opens with the app
        self.responder = HotResponder(app)
        self.parser = HeadParser(self.responder.max_fields)
        self.connection = Connection(f"{REMOTE}:40000", None, REMOTE)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()

    async def decided(self, heads: list[bytes]) -> float:
        """CPU us per decided request over ``heads``."""
        from cadenza.origin.core.request import MediaRequest

        responder, parser, connection = self.responder, self.parser, self.connection
        started_s = time.process_time()
        for index, head in enumerate(heads):
            asked = responder.answer(head, parser, REMOTE, connection)
            if not isinstance(asked, MediaRequest):
                raise RuntimeError(f"not a decided request: {head!r} ({responder.refusal})")
            answer = await responder.load(asked)
            if answer is None or not answer[0].startswith(b"HTTP/1.1 302 "):
                raise RuntimeError(f"no redirect for {head!r}: {answer and answer[0]!r}")
            if index % TURN == TURN - 1:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        return (time.process_time() - started_s) / len(heads) * 1e6

    async def hit(self, head: bytes, requests: int, size: int) -> float:
        """CPU us per plain hot hit of ``head``."""
        responder, parser, connection = self.responder, self.parser, self.connection
        started_s = time.process_time()
        for index in range(requests):
            answer = responder.answer(head, parser, REMOTE, connection)
            if not isinstance(answer, tuple) or answer[1] is None or len(answer[1]) != size:
                raise RuntimeError(f"not a hot hit: {head!r} ({responder.refusal})")
            if index % TURN == TURN - 1:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        return (time.process_time() - started_s) / requests * 1e6


def _decided_heads(package: http_bench.Package, sid: str, requests: int) -> list[bytes]:
    """``requests`` heads of one session, each the next segment number (around
    again after the last)."""
    segments = segment_count(package)
    return [
        request_head(decided_path(package.track, index % segments + 1, sid, index))
        for index in range(requests)
    ]


async def _in_process(package: http_bench.Package, runs: int, requests: int) -> InProcess:
    decided_heads = _decided_heads(package, "in-process", requests)
    hit_head = request_head(package.path_of(package.aac_segment))
    size = package.aac_segment.stat().st_size
    decided: list[float] = []
    hit: list[float] = []
    async with _Core(package) as core:
        # Warm-up: the segment into the hot cache, the model, the decision table.
        from cadenza.origin.core.request import MediaRequest

        first = core.responder.answer(hit_head, core.parser, REMOTE, core.connection)
        if isinstance(first, MediaRequest):
            await core.responder.load(first)
        await core.hit(hit_head, requests // 10, size)
        await core.decided(decided_heads[: requests // 10])
        for index in range(runs):
            if index % 2 == 0:
                decided.append(await core.decided(decided_heads))
                hit.append(await core.hit(hit_head, requests, size))
            else:
                hit.append(await core.hit(hit_head, requests, size))
                decided.append(await core.decided(decided_heads))
            log(
                f"  in process run {index + 1}/{runs}: decided {decided[-1]:.1f} us, "
                f"hit {hit[-1]:.1f} us"
            )
    return InProcess(decided, hit, requests)


def in_process(package: http_bench.Package, runs: int, requests: int) -> InProcess:
    return asyncio.run(_in_process(package, runs, requests))


async def _profile(package: http_bench.Package, requests: int) -> pstats.Stats:
    heads = _decided_heads(package, "profiled", requests)
    async with _Core(package) as core:
        await core.decided(heads[: requests // 10])
        profiler = cProfile.Profile()
        profiler.enable()
        await core.decided(heads)
        profiler.disable()
    return pstats.Stats(profiler)


def profile(package: http_bench.Package, requests: int = IN_PROCESS_REQUESTS) -> None:
    """The in-process decided request's top costs, to stdout."""
    stats = asyncio.run(_profile(package, requests))
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


# --------------------------------------------------------------------------- under wrk


@contextmanager
def origin_server(root: Path, work_dir: Path) -> Iterator[tuple[str, int]]:
    """``cadenza serve`` (1 worker) on a free loopback port, in a process group of
    its own; yields its base URL and the group's id."""
    port = http_bench.free_port()
    log_file = work_dir / f"cadenza-decided-{port}.log"
    argv = [str(Path(sys.executable).parent / "cadenza"), "serve", str(root)]
    argv += ["--host", http_bench.HOST, "--port", str(port), "--workers", "1"]
    # The access log off: a line per request is an operator's choice, paid alike by both
    # series, and would measure the logging, not the decision path.
    # The redirect, as in process: every decided request is answered the same way.
    env = {**os.environ, "CADENZA_ACCESS_LOG": "false", "CADENZA_ABR_DELIVERY": "redirect"}
    with open(log_file, "wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        base = f"http://{http_bench.HOST}:{port}"
        http_bench._wait_ready(process, "cadenza", f"{base}/healthz", log_file, 1)
        log(f"cadenza serve, 1 worker, at {base}")
        yield base, process.pid
    finally:
        http_bench._stop(process, "cadenza")


def status_of(url: str) -> tuple[int, str | None]:
    """One GET without following a redirect: its status and Location."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10.0)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


@dataclass(frozen=True, slots=True)
class WrkRun:
    result: http_bench.WrkResult
    requests: int
    cpu_us_per_request: float


@dataclass(slots=True)
class WrkSeries:
    label: str
    argv_tail: list[str]  # the URL, and the script with its arguments
    runs: list[WrkRun]

    @property
    def rps(self) -> float:
        return median([r.result.requests_per_s for r in self.runs])

    @property
    def p99_ms(self) -> float:
        return median([r.result.p99_ms for r in self.runs])

    @property
    def cpu_us(self) -> float:
        return median([r.cpu_us_per_request for r in self.runs])

    def summary(self) -> dict[str, float | str]:
        return {
            "rps_runs": ", ".join(f"{r.result.requests_per_s:.0f}" for r in self.runs),
            "p99_ms_runs": ", ".join(f"{r.result.p99_ms:.2f}" for r in self.runs),
            "cpu_us_runs": ", ".join(f"{r.cpu_us_per_request:.1f}" for r in self.runs),
        }


def wrk_run(argv_tail: list[str], duration_s: float, pgid: int) -> WrkRun:
    argv = [http_bench.WRK, f"-t{http_bench.THREADS}", f"-c{http_bench.CONNECTIONS}"]
    argv += [f"-d{duration_s:g}s", "--latency", *argv_tail]
    cpu_before_s = group_cpu_s(pgid)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    cpu_s = group_cpu_s(pgid) - cpu_before_s
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-2000:]}")
    result = http_bench.parse_wrk(done.stdout)
    count = _REQUESTS.search(done.stdout)
    if count is None or int(count.group(1)) == 0:
        raise RuntimeError(f"no request count in wrk output:\n{done.stdout}")
    requests = int(count.group(1))
    if result.socket_errors:
        log(f"wrk reported {result.socket_errors} socket errors")
    return WrkRun(result, requests, cpu_s / requests * 1e6)


def under_wrk(
    package: http_bench.Package, work_dir: Path, runs: int, duration_s: float
) -> tuple[WrkSeries, WrkSeries]:
    """(decided, plain hit) series, alternating, on one server."""
    segments = segment_count(package)
    with origin_server(package.root, work_dir) as (base, pgid):
        hit_url = base + package.path_of(package.aac_segment)
        http_bench.expect_ok(hit_url, package.aac_segment.stat().st_size)
        status, location = status_of(base + decided_path(package.track, 1, "check", 0))
        if status != 302 or location is None or "group-" in location:
            raise RuntimeError(f"a decided segment answered {status} {location}")
        script = ["-s", str(LUA_SCRIPT), base, "--", package.track, GROUP, str(segments)]
        script.append(str(SESSIONS_PER_THREAD))
        decided = WrkSeries("decided (302), 64 sessions", script, [])
        hit = WrkSeries("plain 64 KB hot hit", [hit_url], [])
        log("warming up")
        for series in (decided, hit):
            wrk_run(series.argv_tail, http_bench.WARMUP_S, pgid)
        log("measuring")
        for index in range(runs):
            order = (decided, hit) if index % 2 == 0 else (hit, decided)
            for series in order:
                series.runs.append(wrk_run(series.argv_tail, duration_s, pgid))
                last = series.runs[-1]
                log(
                    f"  run {index + 1}/{runs} {series.label}: "
                    f"{last.result.requests_per_s:.0f} req/s, p99 {last.result.p99_ms:.2f} ms, "
                    f"{last.cpu_us_per_request:.1f} us CPU/request"
                )
    return decided, hit


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _fill_store(sessions: int, decisions: int) -> int:
    """RSS grown by a memory store of ``sessions`` sessions, each folded from
    ``max(decisions, 1)`` segment requests and holding ``decisions`` decisions
    (made and recorded as ``origin.deciding.decide_segment`` does)."""
    from cadenza.abr.cmcd import parse_request_cmcd
    from cadenza.abr.controller import decide_rung
    from cadenza.abr.controller_inputs import signals_from_cmcd
    from cadenza.abr.population import network_key_for
    from cadenza.abr.session import SessionState, apply_cmcd, evolve
    from cadenza.abr.session_origin import decision_fields
    from cadenza.origin.deciding import assign_sid
    from cadenza.origin.sessions import MemorySessionStore

    track = "bench"
    store = MemorySessionStore(sessions, 1800.0)
    no_headers: dict[str, str] = {}

    def session(number: int) -> SessionState:
        sid = assign_sid()
        # Viewers from 1,000 /24 networks: the network keys are shared as the origin shares them.
        remote = f"10.{number % 250}.{number // 250 % 4}.{number % 200 + 1}"
        network_key = network_key_for(remote, no_headers)
        state: SessionState | None = None
        now_s = 1_000_000.0 + number
        for request in range(max(decisions, 1)):
            now_s += CLOCK_STEP_S
            cmcd = parse_request_cmcd(cmcd_payload(number + request, track, sid), no_headers)
            state, _ = apply_cmcd(
                state, cmcd, now_s, sid=sid, is_request=True, track=track, network_key=network_key
            )
            if request >= decisions:
                break
            signals = signals_from_cmcd(cmcd)
            decision, controller = decide_rung(
                LADDER_BPS, state.controller, signals, now_s, segment_duration_s=SEGMENT_S
            )
            fields = decision_fields(
                state,
                decision,
                controller,
                segment=request + 1,
                rung=RUNGS[decision.index],
                now_s=now_s,
                object_bytes=LADDER_BPS[decision.index] * 4 // 8,
                segment_duration_s=SEGMENT_S,
                delivery_rate_bps=None,
                direct_peer=None,
            )
            state = evolve(state, **fields)
        assert state is not None
        return state

    session(-1)  # imports, the decision table, caches: before the first reading
    gc.collect()
    before = rss_bytes()
    for number in range(sessions):
        await store.put(session(number))
    gc.collect()
    grown = rss_bytes() - before
    if await store.count() != sessions:
        raise RuntimeError(f"the store holds {await store.count()} sessions, not {sessions}")
    return grown


def memory_child(sessions: int, decisions: int) -> None:
    grown = asyncio.run(_fill_store(sessions, decisions))
    print(json.dumps({"sessions": sessions, "decisions": decisions, "rss_grown_bytes": grown}))


def session_memory(sessions: int, decisions: int) -> float:
    """Bytes of RSS per session, measured in a fresh process."""
    argv = [sys.executable, "-m", "bench.decided_bench", "--memory", str(sessions), str(decisions)]
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=1800, cwd=HERE.parent
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child exited {done.returncode}: {done.stderr[-2000:]}")
    grown = int(json.loads(done.stdout.strip().splitlines()[-1])["rss_grown_bytes"])
    log(
        f"{sessions} sessions, {decisions} decisions each: {grown / 2**20:.1f} MiB RSS "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return grown / sessions


# --------------------------------------------------------------------------- rows


def rows_of(
    local: InProcess,
    decided: WrkSeries,
    hit: WrkSeries,
    runs: int,
    bytes_decided: float,
    bytes_fresh: float,
) -> list[Row]:
    decided_us = median(local.decided_us)
    hit_us = median(local.hit_us)
    wrk_extra: dict[str, float | str] = {
        "cadenza_rps": round(decided.rps, 1),
        "peer_rps": round(hit.rps, 1),
        "cadenza_p99_ms": round(decided.p99_ms, 3),
        "peer_p99_ms": round(hit.p99_ms, 3),
        "sessions": float(http_bench.CONNECTIONS),
    }
    wrk_extra.update({f"cadenza_{k}": v for k, v in decided.summary().items()})
    wrk_extra.update({f"peer_{k}": v for k, v in hit.summary().items()})
    return [
        http_bench._report(
            Row(
                work="origin-decided segment (CMCD, decision, 302), in process",
                peer="plain 64 KB hot hit, in process",
                metric="us CPU/request",
                cadenza=round(decided_us, 1),
                peer_value=round(hit_us, 1),
                goal=GOAL,
                met=decided_us <= BUDGET_US,
                runs=runs,
                extra={
                    "requests_per_run": float(local.requests),
                    "cadenza_us_runs": ", ".join(f"{v:.1f}" for v in local.decided_us),
                    "peer_us_runs": ", ".join(f"{v:.1f}" for v in local.hit_us),
                },
            )
        ),
        http_bench._report(
            Row(
                work="origin-decided segment (302), wrk -c64 with CMCD, 64 sessions, 1 worker",
                peer="plain 64 KB hot hit, same server",
                metric="us origin CPU/request",
                cadenza=round(decided.cpu_us, 1),
                peer_value=round(hit.cpu_us, 1),
                goal=GOAL,
                met=decided.cpu_us <= BUDGET_US,
                runs=runs,
                extra=wrk_extra,
            )
        ),
        http_bench._report(
            Row(
                work="origin-decided segment (302), wrk -c64 with CMCD, 64 sessions, 1 worker",
                peer="plain 64 KB hot hit, same server",
                metric="req/s",
                cadenza=round(decided.rps, 1),
                peer_value=round(hit.rps, 1),
                goal="none set (reported; p99 in results.json)",
                met=None,
                higher_is_better=True,
                runs=runs,
                extra={
                    "cadenza_p99_ms": round(decided.p99_ms, 3),
                    "peer_p99_ms": round(hit.p99_ms, 3),
                },
            )
        ),
        http_bench._report(
            Row(
                work=f"memory session store, {MEMORY_SESSIONS:,} sessions of "
                f"{DECISIONS} decisions each",
                peer="the same sessions after one request, no decision",
                metric="bytes RSS/session",
                cadenza=round(bytes_decided, 0),
                peer_value=round(bytes_fresh, 0),
                goal="none set (reported)",
                met=None,
                runs=1,
                extra={
                    "cadenza_mib": round(bytes_decided * MEMORY_SESSIONS / 2**20, 1),
                    "peer_mib": round(bytes_fresh * MEMORY_SESSIONS / 2**20, 1),
                },
            )
        ),
    ]


def run(work_dir: Path, runs: int = 5, duration_s: float = 5.0) -> list[Row]:
    """Package a track, then measure (see the module docstring)."""
    if runs < 1 or duration_s <= 0:
        raise ValueError("runs must be >= 1 and duration_s > 0")
    work_dir.mkdir(parents=True, exist_ok=True)
    package = http_bench.package_track(work_dir)
    log("in process")
    local = in_process(package, runs, IN_PROCESS_REQUESTS)
    log("under wrk")
    decided, hit = under_wrk(package, work_dir, runs, duration_s)
    log("memory")
    bytes_decided = session_memory(MEMORY_SESSIONS, DECISIONS)
    bytes_fresh = session_memory(MEMORY_SESSIONS, 0)
    return rows_of(local, decided, hit, runs, bytes_decided, bytes_fresh)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--memory"]:
        memory_child(int(argv[1]), int(argv[2]))
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cadenza-decided-bench-") as tmp:
        if argv[:1] == ["--profile"]:
            profile(http_bench.package_track(Path(tmp)))
            return 0
        rows = run(Path(tmp), runs=3, duration_s=5.0)
    for row in rows:
        print(json.dumps(row.to_dict()))
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
