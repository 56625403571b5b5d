"""Live benchmarks (issue 20): how soon a part is available after its last sample
was due, and what one origin worker pays to hold 1,000 blocking playlist reloads.

- Ingest to part available: the real ``cadenza live SOURCE --out DIR --realtime
  --loop --max-duration 20`` over a generated :data:`SOURCE_S` s 44.1 kHz stereo
  FLAC (the default ``live`` ladder and 0.32 s parts).  A thread polls the
  track's ``live.json`` every :data:`POLL_S` (no inotify: a bounded poll), and for
  each part records when the poll first saw it listed; the part's last sample was
  due at ``availability_start_ms`` + its end tick / 48,000.  The figure is that
  delay (median, p95 and max over every part of the run); ``extra`` also has the
  delay to the modification time of the first ``live.json`` listing the part
  (no poll error, the kernel's timestamp granularity) and the ingest's own figure
  from its log (``ingest to part published: median … ms, max … ms over N parts``,
  from the arrival of the block holding a part's last sample).  Goal: the part
  duration plus 50 ms; there is no other live packager here, so the peer is the
  goal itself and the ratio is max / goal.
- Blocking reloads: a real ingest writes a live track (the same source, looped)
  and a fresh ``cadenza serve ROOT`` (one worker, default settings) per round
  serves it.  One aiohttp connector (``limit=0``) first opens :data:`CLIENTS`
  keep-alive connections with one ordinary playlist request each and leaves them
  idle (the peer: the same origin holding that many idle keep-alive
  connections), then sends on every one of them a blocking reload
  (``_HLS_msn``/``_HLS_part``) of the ``aac-64k`` playlist for the part
  :data:`AHEAD_PARTS` parts past the newest (within the Advance Part Limit,
  RFC 8216bis 6.2.5.2), and waits on the origin's ``cadenza_live_blocked_requests``
  gauge until all are held.  Recorded: how many were held at most, how many
  answered ``200`` with a playlist listing the part, each answer's delay after
  the part's publication (the modification time of the first ``live.json``
  listing it), the CPU the origin and this process spent from all held to all
  answered (the client shares the machine: the answer delays include its reading
  of them), and the origin's VmRSS (``/proc/<pid>/status``) before, with the idle
  connections, and while holding the blocking requests.

Run standalone: ``.venv/bin/python -m bench.live_bench`` (runs=2).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.common import Row, median
from bench.package_bench import make_track
from cadenza.manifests.errors import InvalidLiveStateError
from cadenza.manifests.live import LIVE_STATE_NAME, LivePart
from cadenza.manifests.live_json import live_from_json
from tests.origin.live_load import Answer, ClientFleet, wait_held
from tests.origin.originproc import (
    OriginProcess,
    cadenza_serve,
    raise_open_files_limit,
    stop_process,
)

SOURCE_S: Final = 30.0
INGEST_S: Final = 20.0  # --max-duration of the ingest-to-part run
LOAD_INGEST_MAX_S: Final = 600.0  # bound of the load rounds' ingest (stopped before)
POLL_S: Final = 0.005
GOAL_SLACK_MS: Final = 50.0
CLIENTS: Final = 1000
AHEAD_PARTS: Final = 7
MAX_ROUNDS: Final = 3
TRACK: Final = "radio"
RUNG: Final = "aac-64k"
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
LOG_LINE: Final = re.compile(
    r"ingest to part published: median ([0-9.]+) ms, max ([0-9.]+) ms over (\d+) parts"
)


def log(message: str) -> None:
    print(f"[live_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- watching


@dataclass(frozen=True, slots=True)
class SeenPart:
    """A part of the first rendition, as a poll of ``live.json`` first found it."""

    msn: int
    index: int
    gap: bool
    due_ms: float  # wall clock its last sample was due
    seen_ms: float  # wall clock of the poll that first found it listed
    written_ms: float  # modification time of that live.json
    newest: bool  # the newest part of that live.json (no version was missed)


class LiveJsonPoller(threading.Thread):
    """Polls one ``live.json`` every :data:`POLL_S` until stopped; re-reads it only
    when its inode, modification time or size changed (it is replaced atomically)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="live.json poller", daemon=True)
        self.path = path
        self.parts: dict[tuple[int, int], SeenPart] = {}
        self.part_us = 0
        self.parts_per_segment = 1
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(POLL_S):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=STOP_TIMEOUT_S)
        self.poll()

    def poll(self) -> None:
        now_ms = time.time() * 1000
        try:
            with self.path.open("rb") as file:
                info = os.fstat(file.fileno())
                stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
                if stamp == self._stamp:
                    return
                text = file.read()
        except FileNotFoundError:
            return
        try:
            model = live_from_json(text)
        except InvalidLiveStateError:
            return  # not expected (it is replaced whole); read again at the next poll
        self._stamp = stamp
        rendition = model.renditions[0]
        listed: list[tuple[int, int, LivePart, int]] = []
        for segment in rendition.segments:
            end_ticks = segment.start_ticks
            for part in segment.parts:
                end_ticks += part.duration_ticks
                listed.append((segment.number, part.index, part, end_ticks))
        with self._lock:
            self.part_us = model.part_target_us
            self.parts_per_segment = round(model.segment_target_us / model.part_target_us)
            for position, (msn, index, part, end_ticks) in enumerate(listed):
                if (msn, index) in self.parts:
                    continue
                due_ms = model.availability_start_ms + end_ticks * 1000 / rendition.timescale
                self.parts[(msn, index)] = SeenPart(
                    msn,
                    index,
                    part.gap,
                    due_ms,
                    now_ms,
                    info.st_mtime_ns / 1e6,
                    position == len(listed) - 1,
                )

    def seen(self) -> list[SeenPart]:
        with self._lock:
            return sorted(self.parts.values(), key=lambda p: (p.msn, p.index))

    def get(self, key: tuple[int, int]) -> SeenPart | None:
        with self._lock:
            return self.parts.get(key)


# --------------------------------------------------------------------------- processes


@contextmanager
def live_ingest(
    source: Path, root: Path, max_s: float, log_file: Path
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """``cadenza live SOURCE --realtime --loop --max-duration max_s`` into ``root/TRACK``;
    yields its ``live.json`` path and the process; SIGTERM (then SIGKILL) if it still
    runs at the end."""
    argv = [str(Path(sys.executable).with_name("cadenza")), "live", str(source)]
    argv += ["--out", str(root), "--track-id", TRACK, "--realtime", "--loop"]
    argv += ["--max-duration", f"{max_s:g}"]
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield root / TRACK / LIVE_STATE_NAME, process
    finally:
        stop_process(process, STOP_TIMEOUT_S)


def _wait_ended(process: subprocess.Popen[bytes], max_s: float, log_file: Path) -> None:
    """Until the ingest stops by itself (``--max-duration``), bounded; it must succeed."""
    process.wait(timeout=max_s + START_TIMEOUT_S)
    if process.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"cadenza live exited {process.returncode}: {tail}")


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (``utime + stime``) of one process, from ``/proc/<pid>/stat`` (proc(5))."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    fields = text[text.rindex(")") + 2 :].split()  # after the command name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# --------------------------------------------------------------------------- row 1


def ingest_row(source: Path, work: Path) -> Row:
    root = work / "ingest-root"
    log_file = work / "ingest.log"
    with live_ingest(source, root, INGEST_S, log_file) as (state, process):
        poller = LiveJsonPoller(state)
        poller.start()
        try:
            _wait_ended(process, INGEST_S, log_file)
        finally:
            poller.stop()  # after the end: its last parts are listed
    parts = poller.seen()
    if not parts:
        raise RuntimeError(f"no part seen: {log_file.read_text(errors='replace')[-2000:]}")
    seen = [p.seen_ms - p.due_ms for p in parts]
    written = [p.written_ms - p.due_ms for p in parts]
    part_ms = poller.part_us / 1000
    goal_ms = part_ms + GOAL_SLACK_MS
    poll_ms = POLL_S * 1000
    found = LOG_LINE.search(log_file.read_text(errors="replace"))
    own: dict[str, float | str] = (
        {
            "ingest_log_median_ms": float(found[1]),
            "ingest_log_max_ms": float(found[2]),
            "ingest_log_parts": float(found[3]),
        }
        if found
        else {"ingest_log": "no 'ingest to part published' line"}
    )
    log(f"ingest to part: {len(parts)} parts, max {max(seen):.1f} ms; {own}")
    return Row(
        work=f"live ingest to part available ({part_ms:g} ms parts, {INGEST_S:g} s real time)",
        peer=f"the goal: part duration + {GOAL_SLACK_MS:g} ms (no other live packager here)",
        metric=f"ms from last sample due to live.json listing the part, max ({poll_ms:g} ms poll)",
        cadenza=round(max(seen), 1),
        peer_value=goal_ms,
        goal=f"<= {goal_ms:g} ms",
        met=max(seen) <= goal_ms,
        runs=1,
        extra={
            "parts": float(len(parts)),
            "gap_parts": float(sum(p.gap for p in parts)),
            "median_ms": round(median(seen), 1),
            "p95_ms": round(_percentile(seen, 0.95), 1),
            "max_ms": round(max(seen), 1),
            "written_median_ms": round(median(written), 1),
            "written_max_ms": round(max(written), 1),
            "poll_ms": poll_ms,
            **own,
        },
    )


# --------------------------------------------------------------------------- row 2


@dataclass(frozen=True, slots=True)
class Round:
    held_max: float
    answered_ok: int
    delays_ms: list[float]
    exact_publication: bool
    rss_before_kib: int
    rss_idle_kib: int
    rss_holding_kib: int
    origin_cpu_ms: float  # from all held to all answered
    client_cpu_ms: float  # this process (the fleet, the poller), the same span


def _target(poller: LiveJsonPoller) -> tuple[int, int]:
    newest = poller.seen()[-1]
    ahead = newest.index + AHEAD_PARTS
    return newest.msn + ahead // poller.parts_per_segment, ahead % poller.parts_per_segment


async def _round(origin: OriginProcess, poller: LiveJsonPoller) -> Round:
    playlist = f"/{TRACK}/{RUNG}/playlist.m3u8"
    for path in (f"/{TRACK}/master.m3u8", playlist):  # warm: the watch and every code path
        with await asyncio.to_thread(urllib.request.urlopen, origin.url + path, None, 30) as r:
            r.read()
    rss_before = origin.rss_kib()
    async with ClientFleet(origin.url, CLIENTS) as fleet:
        idle = await fleet.open_idle(playlist)
        if [a.status for a in idle] != [200] * CLIENTS:
            raise RuntimeError("the idle connections' requests did not all answer 200")
        rss_idle = origin.rss_kib()
        msn, part = _target(poller)
        asked = fleet.ask(f"{playlist}?_HLS_msn={msn}&_HLS_part={part}")
        held = await wait_held(
            origin.url, CLIENTS, give_up=lambda: poller.get((msn, part)) is not None
        )
        rss_holding = origin.rss_kib()
        origin_cpu_s, client_cpu_s = _process_cpu_s(origin.process.pid), time.process_time()
        answers: list[Answer] = await asked
        origin_cpu_s = _process_cpu_s(origin.process.pid) - origin_cpu_s
        client_cpu_s = time.process_time() - client_cpu_s
    published = poller.get((msn, part))
    for _ in range(round(START_TIMEOUT_S / POLL_S)):  # bounded: answered, so it is listed
        if published is not None:
            break
        await asyncio.sleep(POLL_S)
        published = poller.get((msn, part))
    if published is None:
        raise RuntimeError(f"part {msn}.{part} answered but never seen in live.json")
    uri = f'URI="seg-{msn:05d}.p{part}.m4s"'.encode()
    return Round(
        held_max=held,
        answered_ok=sum(a.status == 200 and uri in a.body for a in answers),
        delays_ms=[a.done_s * 1000 - published.written_ms for a in answers],
        exact_publication=published.newest,
        rss_before_kib=rss_before,
        rss_idle_kib=rss_idle,
        rss_holding_kib=rss_holding,
        origin_cpu_ms=origin_cpu_s * 1000,
        client_cpu_ms=client_cpu_s * 1000,
    )


def load_rows(source: Path, work: Path, rounds: int) -> list[Row]:
    root = work / "load-root"
    if raise_open_files_limit() < CLIENTS + 100:
        raise RuntimeError("the open files limit is too low for the blocking-reload rounds")
    done: list[Round] = []
    ingest_log = work / "load-ingest.log"
    with live_ingest(source, root, LOAD_INGEST_MAX_S, ingest_log) as (state, _):
        poller = LiveJsonPoller(state)
        poller.start()
        try:
            for _ in range(round(START_TIMEOUT_S / 0.05)):  # bounded: a few parts listed
                if len(poller.parts) >= 3 and (state.parent / "master.m3u8").exists():
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("the load rounds' ingest published nothing")
            for number in range(rounds):
                with cadenza_serve(str(root), work) as origin:
                    found = asyncio.run(_round(origin, poller))
                log(
                    f"round {number + 1}: {found.answered_ok} ok, held {found.held_max:g}, "
                    f"max {max(found.delays_ms):.0f} ms, RSS {found.rss_before_kib} / "
                    f"{found.rss_idle_kib} / {found.rss_holding_kib} KiB"
                )
                done.append(found)
        finally:
            poller.stop()
    part_ms = poller.part_us / 1000
    all_held = all(r.held_max >= CLIENTS and r.answered_ok == CLIENTS for r in done)
    before = median([r.rss_before_kib for r in done])
    idle = median([r.rss_idle_kib for r in done])
    holding = median([r.rss_holding_kib for r in done])
    return [
        Row(
            work=f"{CLIENTS:,} blocking LL-HLS reloads (_HLS_msn/_HLS_part), one origin worker",
            peer=f"the next part's publication: one part duration ({part_ms:g} ms)",
            metric="ms from the part's publication to the last answer",
            cadenza=round(median([max(r.delays_ms) for r in done]), 1),
            peer_value=part_ms,
            goal=f"all {CLIENTS:,} held, answered 200 with the part",
            met=all_held,
            runs=len(done),
            extra={
                "answered_ok_min": float(min(r.answered_ok for r in done)),
                "held_max_min": min(r.held_max for r in done),
                "first_ms": round(median([min(r.delays_ms) for r in done]), 1),
                "p50_ms": round(median([_percentile(r.delays_ms, 0.5) for r in done]), 1),
                "p99_ms": round(median([_percentile(r.delays_ms, 0.99) for r in done]), 1),
                "max_ms": round(median([max(r.delays_ms) for r in done]), 1),
                "worst_max_ms": round(max(max(r.delays_ms) for r in done), 1),
                "exact_publication_rounds": float(sum(r.exact_publication for r in done)),
                "origin_cpu_ms": round(median([r.origin_cpu_ms for r in done]), 1),
                "client_cpu_ms": round(median([r.client_cpu_ms for r in done]), 1),
            },
        ),
        Row(
            work=f"origin RSS holding {CLIENTS:,} blocking reloads",
            peer=f"the same origin holding {CLIENTS:,} idle keep-alive connections",
            metric="VmRSS, MiB",
            cadenza=round(holding / 1024, 1),
            peer_value=round(idle / 1024, 1),
            goal="reported",
            met=None,
            runs=len(done),
            extra={
                "rss_before_mib": round(before / 1024, 1),
                "kib_per_blocked_request": round((holding - before) / CLIENTS, 2),
                "kib_per_idle_connection": round((idle - before) / CLIENTS, 2),
                "kib_per_block_over_idle": round((holding - idle) / CLIENTS, 2),
            },
        ),
    ]


def run(work: Path, runs: int = 5) -> list[Row]:
    """Row 1 (one ingest run), then the load rows (``min(runs, MAX_ROUNDS)`` rounds)."""
    work.mkdir(parents=True, exist_ok=True)
    source = make_track(work / "inputs" / "live-source.flac", SOURCE_S)
    rows = [ingest_row(source, work)]
    rows += load_rows(source, work, max(1, min(runs, MAX_ROUNDS)))
    return rows


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="cadenza-live-bench-") as tmp:
        for row in run(Path(tmp), runs=2):
            print(json.dumps(row.to_dict()), file=sys.stdout)
