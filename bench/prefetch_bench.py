"""Predictive prefetch (issue 19): on a simulated listening session over a
playlist of packaged tracks, the share of track starts whose first segment was
already hot when the player asked for it.

- Catalogue: :data:`TRACKS` synthetic 24 s tracks (different seeds), each
  packaged with the ``lossy`` ladder (AAC 64/128/256, Opus 64/128) into 4 s
  segments (6 per track).
- Origin: ``create_app`` in this process on a loopback port (aiohttp's
  ``TestServer``), a fresh one (an empty hot cache) per measured session.
- Player: one session (CMCD ``sid`` in the query of every request) plays the
  playlist in order on ``aac-128k``: the media playlist, the init segment, then
  each segment, one every segment duration divided by :data:`SPEEDUP` (a
  player with a full buffer asks for a segment per segment duration; the
  prefetch budgets, ``prefetch_rate_per_s`` and ``prefetch_session_max``, are
  scaled by the same factor, so they bind as they would in real time).  A track
  start is hot when the first request for its first segment answers
  ``X-Cadenza-Cache: hit``; the first track of the playlist is not counted
  (nothing precedes it).
- Rows: (a) the session states the playlist as its queue first
  (``POST /v1/sessions/{sid}/queue``; goal: at least 90 % hot); (b) no queue, and
  :data:`TRAINING` earlier sessions played the same playlist (the transitions
  they taught are handed to the measured origin, its cache empty); each against
  the same session with ``prefetch = false`` (the peer).  The figure is the
  share of cold starts (lower is better); medians over ``runs``.

Run standalone: ``.venv/bin/python -m bench.prefetch_bench`` (runs=3).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bench.common import Row
from bench.package_bench import make_track
from cadenza.manifests.ladder import PRESETS
from cadenza.origin.app import create_app
from cadenza.origin.prefetch.engine import PREFETCHER
from cadenza.origin.settings import Settings
from cadenza.packager.track import PackageOptions, package_track

TRACKS: Final = 10
TRACK_S: Final = 24.0
SEGMENT_S: Final = 4.0
SPEEDUP: Final = 20.0
TRAINING: Final = 3
RUNG: Final = "aac-128k"
GOAL_HOT_PCT: Final = 90.0


def make_catalogue(work: Path) -> tuple[Path, list[str]]:
    """ROOT with :data:`TRACKS` packaged tracks, and their ids in playlist order."""
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(TRACKS):
        source = make_track(work / "inputs" / f"song-{index:02d}.flac", TRACK_S, seed=100 + index)
        result = package_track(source, root, PackageOptions(PRESETS["lossy"]))
        if result.status not in ("packaged", "skipped"):
            raise RuntimeError(f"packaging {source} failed: {result.error}")
        ids.append(result.track_id)
    return root, ids


def _cmcd(sid: str) -> str:
    return quote(f'sid="{sid}",ot=a,sf=h', safe="")


async def _listen(
    http: ClientSession,
    base: str,
    sid: str,
    playlist: list[str],
    segments: int,
    pace_s: float,
) -> list[bool]:
    """Play ``playlist``; per track after the first, whether its first segment was hot."""
    hot = []
    query = f"?CMCD={_cmcd(sid)}"
    for position, track in enumerate(playlist):
        for name in ("playlist.m3u8", "init.mp4"):
            async with http.get(f"{base}/{track}/{RUNG}/{name}{query}") as response:
                await response.read()
        for number in range(1, segments + 1):
            async with http.get(f"{base}/{track}/{RUNG}/seg-{number:05d}.m4s{query}") as response:
                await response.read()
                if number == 1 and position > 0:
                    hot.append(response.headers.get("X-Cadenza-Cache") == "hit")
            if pace_s > 0:
                await asyncio.sleep(pace_s)  # the player's pace, not a wait for the origin
    return hot


def _settings(root: Path, *, prefetch: bool) -> Settings:
    defaults = Settings(root=str(root))
    return Settings(
        root=str(root),
        access_log=False,
        prefetch=prefetch,
        prefetch_rate_per_s=defaults.prefetch_rate_per_s * SPEEDUP,
        prefetch_session_max=round(defaults.prefetch_session_max * SPEEDUP),
    )


async def _session(
    root: Path,
    playlist: list[str],
    *,
    prefetch: bool,
    queue: bool,
    taught: Any | None = None,
) -> tuple[float, Any]:
    """Cold track starts (%) of one paced session on a fresh origin, and the
    origin's transitions (to teach the next origin)."""
    app = create_app(_settings(root, prefetch=prefetch))
    server = TestServer(app)
    await server.start_server()
    try:
        if taught is not None:
            app[PREFETCHER].transitions = taught
        base = str(server.make_url("")).rstrip("/")
        segments = round(TRACK_S / SEGMENT_S)
        async with ClientSession() as http:
            if queue:
                body = json.dumps({"tracks": playlist})
                async with http.post(f"{base}/v1/sessions/listener/queue", data=body) as answer:
                    if answer.status != 200:
                        raise RuntimeError(f"queue refused: {answer.status}")
            hot = await _listen(http, base, "listener", playlist, segments, SEGMENT_S / SPEEDUP)
        return 100.0 * hot.count(False) / len(hot), app[PREFETCHER].transitions
    finally:
        await server.close()


async def _teach(root: Path, playlist: list[str]) -> Any:
    """Transitions of :data:`TRAINING` earlier sessions over the playlist."""
    app = create_app(_settings(root, prefetch=True))
    server = TestServer(app)
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with ClientSession() as http:
            for n in range(TRAINING):
                await _listen(http, base, f"earlier-{n}", playlist, 1, 0.0)
        prefetcher = app[PREFETCHER]
        for _ in range(10_000):  # bounded: the planner has a few hundred requests to read
            if prefetcher.idle():
                break
            await asyncio.sleep(0.01)
        return prefetcher.transitions
    finally:
        await server.close()


async def _measure(root: Path, playlist: list[str], runs: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"queue": [], "learned": [], "none": []}
    for _ in range(runs):
        found["none"].append((await _session(root, playlist, prefetch=False, queue=True))[0])
        found["queue"].append((await _session(root, playlist, prefetch=True, queue=True))[0])
        taught = await _teach(root, playlist)
        cold, _ = await _session(root, playlist, prefetch=True, queue=False, taught=taught)
        found["learned"].append(cold)
    return found


def run(work: Path, runs: int = 5) -> list[Row]:
    work.mkdir(parents=True, exist_ok=True)
    root, playlist = make_catalogue(work)
    found = asyncio.run(_measure(root, playlist, runs))
    none_pct = statistics.median(found["none"])
    queue_pct = statistics.median(found["queue"])
    learned_pct = statistics.median(found["learned"])
    starts = TRACKS - 1
    metric = f"cold track starts, % of {starts} (lower is better)"
    return [
        Row(
            work=f"prefetch, stated queue ({TRACKS} x {TRACK_S:g} s tracks)",
            peer="same session, prefetch off",
            metric=metric,
            cadenza=queue_pct,
            peer_value=none_pct,
            goal=f"hot >= {GOAL_HOT_PCT:g} %",
            met=100.0 - queue_pct >= GOAL_HOT_PCT,
            runs=runs,
            extra={"hot_pct": round(100.0 - queue_pct, 1), "speedup": SPEEDUP},
        ),
        Row(
            work=f"prefetch, learned from {TRAINING} earlier sessions",
            peer="same session, prefetch off",
            metric=metric,
            cadenza=learned_pct,
            peer_value=none_pct,
            goal="reported",
            met=None,
            runs=runs,
            extra={"hot_pct": round(100.0 - learned_pct, 1), "speedup": SPEEDUP},
        ),
    ]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="cadenza-prefetch-bench-") as tmp:
        for row in run(Path(tmp), runs=3):
            print(json.dumps(row.to_dict()), file=sys.stdout)
