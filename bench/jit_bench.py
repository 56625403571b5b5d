"""Just-in-time benchmarks (issue 19): a track served from its source file on first play,
against the same track batch-packaged, measured side by side in one run.

One 180 s 44.1 kHz stereo FLAC (synthesised music with a -70 dBFS noise floor, so its
FLAC rung is as large as a recording's) is the source.  The peer is the same track
packaged by ``cadenza package`` (the default ladder) and served as plain files.

- First-play latency: a fresh ``cadenza serve ROOT --sources DIR`` process over an empty
  ROOT (a cold just-in-time track: nothing probed, built or written back; promotion off)
  and, as the peer, a fresh ``cadenza serve`` process over the batch-packaged folder,
  alternating.  One keep-alive connection asks, as a player starting the track does, for
  ``master.m3u8``, the top AAC rung's media playlist, its init segment and its first
  segment, then for segment 2 as soon as segment 1 has arrived (a player filling its
  buffer).  Each figure is the time from sending the request to receiving the response
  head (its first bytes).  Segment 2 was ready before it was asked for when it answers
  as a stored file does (within the peer's time plus ``READY_SLACK_MS``); it is measured
  without CMCD, and again (fresh processes, the start only) with every segment request
  carrying CMCD that names the next segment (``nor``), which the origin may warm.  Then
  segment 3 is asked for one segment duration after segment 2 arrived, as a player whose
  buffer is full asks, and measured the same way.
- Playback cost: the same JIT process then asks for every other segment of the rung (the
  whole rung built from cold), and plays the rung ``WARM_PLAYS`` more times (warm: the
  hot cache); its CPU is the ``utime + stime`` its process group gained (from ``/proc``),
  scaled to CPU seconds per hour of audio.  The peer is ``cadenza package``'s CPU for the
  same track (the whole ladder, one run, from ``wait4``), scaled the same way.
- Storage: for a catalogue where 80 % of tracks are never played, batch packaging stores
  the whole ladder of every track (one packaged track's folder × N), and JIT stores only
  what plays wrote back: everything under ROOT after the cold play of the whole top AAC
  rung of a full-length track (the write-back area), × 20 % of N.  Sources count in
  neither: both keep them.

Run standalone: ``.venv/bin/python -m bench.jit_bench [runs]``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from bench import http_bench, package_bench
from bench.common import Row, clean, group_cpu_s, median, run_process
from cadenza.manifests.ladder import DEFAULT_LADDER
from cadenza.manifests.model import Codec

TRACK_NAME = "jit-bench"  # the source's stem: the JIT track id
TRACK_S = 180.0
RATE_HZ = 44_100
NOISE_FLOOR = 0.0003  # -70 dBFS, as in bench/http_bench.py
# The default ladder's top AAC rung (aac-320k): what a player on a good network plays.
TOP_AAC_RUNG = max(
    (rung for rung in DEFAULT_LADDER.rungs if rung.codec is Codec.AAC),
    key=lambda rung: rung.bitrate_bps or 0,
)
TOP_AAC = TOP_AAC_RUNG.id
FIRST_SEGMENT_GOAL_MS = 300.0
READY_SLACK_MS = 5.0  # "ready before asked": answered like a stored file, within this
PLAYED_SHARE = 0.2  # the catalogue's share of tracks ever played
START_SEGMENTS = 2  # a warm-up's or a start-up run's segments
PACED_SEGMENT = 3  # asked for a segment duration after segment 2 (a full buffer)
WARM_PLAYS = 10  # warm plays measured together (CPU is read in 10 ms ticks)
WRITE_BACK_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
# JIT options of the bench's origin: no promotion (a background batch run would add its
# CPU and a whole package to what the JIT play is charged with).
JIT_FLAGS: tuple[str, ...] = ("--jit-promote-after-requests", "0")
PEER = "the same track batch-packaged (default ladder), cold origin process, plain files"


def log(message: str) -> None:
    print(f"[jit_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- playlists


def variant_uri(master: str, rendition_id: str) -> str:
    """The URI of the master playlist's variant whose first path segment is ``rendition_id``."""
    uris: list[str] = []
    lines = [line.strip() for line in master.splitlines()]
    for index, line in enumerate(lines):
        if not line.startswith("#EXT-X-STREAM-INF:"):
            continue
        uri = next((n for n in lines[index + 1 :] if n and not n.startswith("#")), None)
        if uri is not None:
            uris.append(uri)
            if uri.split("/", 1)[0] == rendition_id:
                return uri
    raise RuntimeError(f"no variant {rendition_id} in the master playlist: {uris}")


_MAP = re.compile(r'^#EXT-X-MAP:.*\bURI="([^"]+)"')
_EXTINF = re.compile(r"^#EXTINF:([0-9.]+)")


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    init_uri: str
    segments: tuple[tuple[float, str], ...]  # (duration s, URI) in order


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The init URI and the segments of an HLS media playlist (RFC 8216 4.3.2.1, 4.3.2.5)."""
    init_uri: str | None = None
    segments: list[tuple[float, str]] = []
    duration_s: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if (found := _MAP.match(line)) is not None:
            init_uri = found.group(1)
        elif (found := _EXTINF.match(line)) is not None:
            duration_s = float(found.group(1))
        elif line and not line.startswith("#") and duration_s is not None:
            segments.append((duration_s, line))
            duration_s = None
    if init_uri is None or not segments:
        raise RuntimeError(f"not a fragmented-MP4 media playlist:\n{text[:500]}")
    return MediaPlaylist(init_uri, tuple(segments))


# --------------------------------------------------------------------------- the player


@dataclass(frozen=True, slots=True)
class Fetched:
    path: str
    ttfb_s: float  # request sent -> response head received
    started_s: float  # perf_counter when the request was sent
    size_bytes: int
    cache: str  # the origin's X-Cadenza-Cache answer (hit, miss, coalesced, ...)


class Player:
    """One keep-alive connection, as a player's; each GET timed to its response head."""

    def __init__(self, base: str) -> None:
        self._connection = http.client.HTTPConnection(
            urlsplit(base).netloc, timeout=REQUEST_TIMEOUT_S
        )

    def get(self, path: str) -> tuple[Fetched, bytes]:
        started = time.perf_counter()
        self._connection.request("GET", path)
        response = self._connection.getresponse()
        head_s = time.perf_counter()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        cache = response.getheader("X-Cadenza-Cache") or "none"
        return Fetched(path, head_s - started, started, len(body), cache), body

    def close(self) -> None:
        self._connection.close()


@dataclass(frozen=True, slots=True)
class Play:
    """One play of a rung: the start-up requests, then the segments in order."""

    master: Fetched
    playlist: Fetched
    init: Fetched
    segments: tuple[Fetched, ...]
    segment_count: int  # in the playlist
    duration_s: float  # of the whole rung, from the playlist
    first_segment_s: float  # EXTINF of segment 1

    @property
    def startup_s(self) -> float:
        """Master request sent -> first segment's response head."""
        first = self.segments[0]
        return first.started_s + first.ttfb_s - self.master.started_s


def cmcd_query(track_id: str, sid: str, bitrate_kbps: int, duration_s: float, nor: str) -> str:
    """A segment request's CMCD (CTA-5004, keys in alphabetical order) naming the next
    object (``nor``, relative to the request's URL) as a player filling its buffer does."""
    pairs = [
        f"br={bitrate_kbps}",
        f'cid="{track_id}"',
        f"d={round(duration_s * 1000)}",
        *([f'nor="{nor}"'] if nor else []),
        "ot=a",
        "sf=h",
        f'sid="{sid}"',
        "st=v",
        "v=1",
    ]
    return "?CMCD=" + quote(",".join(pairs), safe="")


def play(
    player: Player,
    track_id: str,
    rendition_id: str,
    *,
    limit: int | None = None,
    cmcd_sid: str | None = None,
    paced: int | None = None,
) -> Play:
    """Start ``track_id`` as a player does, then ask for its segments back to back
    (the first ``limit`` of them, or all), except segment ``paced``, asked for one
    segment duration after the one before it arrived (as a player whose buffer is full
    does); with ``cmcd_sid``, each segment request carries CMCD naming the next segment
    (``nor``)."""
    master, body = player.get(f"/{track_id}/master.m3u8")
    playlist_path = urljoin(master.path, variant_uri(body.decode(), rendition_id))
    playlist, body = player.get(playlist_path)
    media = parse_media_playlist(body.decode())
    init, _ = player.get(urljoin(playlist_path, media.init_uri))
    wanted = media.segments if limit is None else media.segments[:limit]
    kbps = int(rendition_id.rsplit("-", 1)[1].rstrip("k"))
    fetched: list[Fetched] = []
    for index, (duration_s, uri) in enumerate(wanted):
        path = urljoin(playlist_path, uri)
        if paced is not None and index == paced - 1 and index > 0:
            time.sleep(wanted[index - 1][0])  # playing the previous segment
        if cmcd_sid is not None:
            following = media.segments[index + 1 : index + 2]
            nor = following[0][1].rsplit("/", 1)[-1] if following else ""
            path += cmcd_query(track_id, cmcd_sid, kbps, duration_s, nor)
        fetched.append(player.get(path)[0])
    segments = tuple(fetched)
    return Play(
        master,
        playlist,
        init,
        segments,
        len(media.segments),
        sum(d for d, _ in media.segments),
        media.segments[0][0],
    )


# --------------------------------------------------------------------------- processes


@contextmanager
def origin(root: Path, work: Path, sources: Path | None) -> Iterator[tuple[str, int]]:
    """A fresh ``cadenza serve ROOT`` (``--sources DIR`` for JIT), 1 worker, on a free
    loopback port, in a process group of its own; yields its base URL and group id."""
    port = http_bench.free_port()
    log_file = work / f"cadenza-{'jit' if sources else 'plain'}-{port}.log"
    argv = [package_bench.cadenza_path(), "serve", str(root)]
    argv += ["--host", http_bench.HOST, "--port", str(port), "--workers", "1"]
    if sources is not None:
        argv += ["--sources", str(sources), *JIT_FLAGS]
    # No access log: a line per request is paid alike by both, and is not what is measured.
    env = {**os.environ, "CADENZA_ACCESS_LOG": "false"}
    with open(log_file, "wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        base = f"http://{http_bench.HOST}:{port}"
        http_bench._wait_ready(process, "cadenza", f"{base}/healthz", log_file, 1)
        yield base, process.pid
    finally:
        http_bench._stop(process, "cadenza")


def tree_bytes(folder: Path) -> int:
    """Bytes of every regular file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def wait_written_back(root: Path, segments: int) -> bool:
    """Bounded wait until ``root`` holds ``segments`` media segments (write-back runs in
    the background, after the answer); False when it did not get there."""
    deadline = time.monotonic() + WRITE_BACK_TIMEOUT_S
    while time.monotonic() < deadline:
        if sum(1 for _ in root.rglob("seg-*.m4s")) >= segments:
            return True
        time.sleep(0.05)
    return False


_SAMPLE = re.compile(r"^(cadenza_(?:jit|prefetch)_[a-z_]+(?:\{[^}]*\})?) ([0-9.eE+-]+)$")


def jit_samples(base: str) -> dict[str, float]:
    """The origin's ``cadenza_jit_*`` and ``cadenza_prefetch_*`` samples (Prometheus
    text) by name and labels; empty when it has none."""
    status, _headers, body = http_bench.fetch(f"{base}/metrics")
    if status != 200:
        return {}
    found = (_SAMPLE.match(line) for line in body.decode().splitlines())
    return {m.group(1): float(m.group(2)) for m in found if m is not None}


# --------------------------------------------------------------------------- the runs


@dataclass(frozen=True, slots=True)
class Run:
    """One fresh origin process: the first play (timed), and for JIT its costs."""

    first: Play
    cold_cpu_s: float  # the whole rung played once from a fresh process
    warm_cpu_s: float  # the whole rung played again by the same process
    stored_bytes: int  # what ROOT holds after the first play
    written_back: bool
    samples: dict[str, float]  # the origin's JIT and prefetch metrics after the first play


def one_run(
    root: Path, work: Path, sources: Path | None, *, whole: bool = True, cmcd: bool = False
) -> Run:
    """A fresh origin over ``root``: the track's first play (its whole top AAC rung when
    ``whole``, else its start), then, when ``whole``, ``WARM_PLAYS`` more plays; CPU of
    the first and of one warm play, and ROOT's bytes after the first."""
    if sources is not None:  # a cold JIT track: nothing built or written back yet
        clean(root)
        root.mkdir(parents=True)
    sid = f"jit-bench-{time.monotonic_ns()}" if cmcd else None
    with origin(root, work, sources) as (base, pgid):
        player = Player(base)
        try:
            before = group_cpu_s(pgid, reaped_children=True)
            limit = None if whole else START_SEGMENTS
            paced = None if cmcd or not whole else PACED_SEGMENT
            first = play(player, TRACK_NAME, TOP_AAC, limit=limit, cmcd_sid=sid, paced=paced)
            written_back = sources is None or wait_written_back(root, len(first.segments))
            cold = group_cpu_s(pgid, reaped_children=True)
            stored = tree_bytes(root)
            samples = jit_samples(base)
            plays = WARM_PLAYS if whole else 0
            for _ in range(plays):
                play(player, TRACK_NAME, TOP_AAC, cmcd_sid=sid)
            warm = group_cpu_s(pgid, reaped_children=True)
        finally:
            player.close()
    warm_s = (warm - cold) / max(1, plays)
    return Run(first, cold - before, warm_s, stored, written_back, samples)


def alternate_runs(
    jit: Callable[[], Run], peer: Callable[[], Run], runs: int
) -> tuple[list[Run], list[Run]]:
    """``runs`` of each, alternating which goes first (see bench/common.py ``alternate``)."""
    ours: list[Run] = []
    theirs: list[Run] = []
    for index in range(runs):
        order = (jit, peer) if index % 2 == 0 else (peer, jit)
        for step in order:
            (ours if step is jit else theirs).append(step())
    return ours, theirs


def make_source(path: Path, duration_s: float, seed: int = 19) -> Path:
    """The synthetic track (samples/make_sample.py) with a noise floor, made in a child
    process so that the runner stays small (see bench/package_bench.py ``make_track``)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, numpy as np; from pathlib import Path; "
        "from samples.make_sample import synthesize, write_audio; "
        "s = synthesize(float(sys.argv[2]), int(sys.argv[3]), 2, seed=int(sys.argv[4])); "
        "s = s + float(sys.argv[5]) * np.random.default_rng(11).standard_normal(s.shape); "
        "write_audio(Path(sys.argv[1]), s.astype(np.float32), int(sys.argv[3]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(duration_s), str(RATE_HZ), str(seed),
         str(NOISE_FLOOR)],
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    return path


# --------------------------------------------------------------------------- rows


def _ms(values: Sequence[float]) -> float:
    return round(1000.0 * median(values), 2)


def _runs_ms(values: Sequence[float]) -> str:
    return ", ".join(f"{1000.0 * v:.1f}" for v in values)


def latency_rows(ours: list[Run], theirs: list[Run], runs: int) -> list[Row]:
    name = f"First play, cold JIT track ({TRACK_S:g} s FLAC source), {TOP_AAC}"
    picks: list[tuple[str, Callable[[Play], float], str, bool | None]] = [
        ("master.m3u8", lambda p: p.master.ttfb_s, "none set (reported)", None),
        ("media playlist", lambda p: p.playlist.ttfb_s, "none set (reported)", None),
        ("init segment", lambda p: p.init.ttfb_s, "none set (reported)", None),
    ]
    rows = []
    for label, pick, goal, met in picks:
        a = [pick(r.first) for r in ours]
        b = [pick(r.first) for r in theirs]
        rows.append(
            Row(f"{name}: {label}", PEER, "TTFB ms", _ms(a), _ms(b), goal, met, runs=runs,
                extra={"cadenza_runs_ms": _runs_ms(a), "peer_runs_ms": _runs_ms(b)})
        )  # fmt: skip
    first = [r.first.segments[0].ttfb_s for r in ours]
    peer_first = [r.first.segments[0].ttfb_s for r in theirs]
    startup = [r.first.startup_s for r in ours]
    peer_startup = [r.first.startup_s for r in theirs]
    rows.append(
        Row(f"{name}: first segment", PEER, "TTFB ms", _ms(first), _ms(peer_first),
            f"<= {FIRST_SEGMENT_GOAL_MS:g} ms", 1000.0 * median(first) <= FIRST_SEGMENT_GOAL_MS,
            runs=runs, extra={"cadenza_runs_ms": _runs_ms(first),
                              "peer_runs_ms": _runs_ms(peer_first)})
    )  # fmt: skip
    rows.append(
        Row(f"{name}: start-up (master request sent to first segment's first byte)", PEER,
            "ms", _ms(startup), _ms(peer_startup), "none set (reported)", None, runs=runs,
            extra={"cadenza_runs_ms": _runs_ms(startup), "peer_runs_ms": _runs_ms(peer_startup)})
    )  # fmt: skip
    return rows


def next_segment_row(
    ours: list[Run], theirs: list[Run], runs: int, how: str, number: int = 2
) -> Row:
    """Segment 2, asked for as soon as segment 1 has arrived (``how``: with or without
    CMCD).  Ready before the player asks means it answers as a stored file does: within
    the plain origin's time for the same request plus a few milliseconds, far below what
    building it takes."""
    second = [r.first.segments[number - 1].ttfb_s for r in ours]
    peer_second = [r.first.segments[number - 1].ttfb_s for r in theirs]
    segment_ms = 1000.0 * ours[0].first.first_segment_s
    ready_ms = 1000.0 * median(peer_second) + READY_SLACK_MS
    return Row(
        f"First play, cold JIT track, {TOP_AAC}: segment {number} asked for {how}",
        PEER,
        "TTFB ms",
        _ms(second),
        _ms(peer_second),
        f"ready before asked (TTFB <= plain file's + {READY_SLACK_MS:g} ms)",
        1000.0 * median(second) <= ready_ms,
        runs=runs,
        extra={
            "segment_duration_ms": round(segment_ms, 1),
            "share_of_segment_duration_pct": round(100.0 * median(second) * 1000 / segment_ms, 2),
            "cadenza_runs_ms": _runs_ms(second),
            "peer_runs_ms": _runs_ms(peer_second),
            "cadenza_cache_runs": ", ".join(r.first.segments[number - 1].cache for r in ours),
            **prefetch_extras(ours),
        },
    )


def prefetch_extras(ours: Sequence[Run]) -> dict[str, float | str]:
    """Warms the JIT origin issued for a CMCD ``nor`` and how many a request then used,
    per run (none without CMCD)."""
    issued = 'cadenza_prefetch_issued_total{reason="nor"}'
    used = "cadenza_prefetch_used_total"
    if not any(r.samples.get(issued) for r in ours):
        return {}
    return {
        "prefetch_nor_issued_runs": ", ".join(f"{r.samples.get(issued, 0):.0f}" for r in ours),
        "prefetch_used_runs": ", ".join(f"{r.samples.get(used, 0):.0f}" for r in ours),
    }


def build_extras(ours: Sequence[Run]) -> dict[str, float | str]:
    """From the JIT origin's metrics after each first play: segments it built (each once,
    if single-flight holds) and their mean build time."""
    built = 'cadenza_jit_builds_total{kind="segment",outcome="ok"}'
    total = 'cadenza_jit_build_duration_seconds_sum{kind="segment"}'
    count = 'cadenza_jit_build_duration_seconds_count{kind="segment"}'
    extras: dict[str, float | str] = {}
    if all(built in r.samples for r in ours):
        extras["segments_built_runs"] = ", ".join(f"{r.samples[built]:.0f}" for r in ours)
    means = [1000.0 * r.samples[total] / r.samples[count] for r in ours if r.samples.get(count)]
    if means:
        extras["mean_segment_build_ms"] = round(median(means), 1)
    return extras


def cost_rows(
    ours: list[Run], theirs: list[Run], package_cpu_s: float, rung_cpu_s: float, runs: int
) -> list[Row]:
    """JIT play CPU against the batch packager's for the whole ladder; the batch CPU of
    the played rung alone (``rung_cpu_s``) goes in ``extra``."""
    duration_s = ours[0].first.duration_s
    per_hour = 3600.0 / duration_s
    peer_per_hour = package_cpu_s * 3600.0 / TRACK_S
    peer_name = "cadenza package, whole default ladder (7 rungs), same track"
    cold = [r.cold_cpu_s for r in ours]
    warm = [r.warm_cpu_s for r in ours]
    plain = [r.warm_cpu_s for r in theirs]
    common: dict[str, float | str] = {
        "package_cpu_s": round(package_cpu_s, 2),
        "package_runs": 1.0,
        "package_top_aac_only_cpu_s_per_hour": round(rung_cpu_s * 3600.0 / TRACK_S, 2),
        "audio_s": round(duration_s, 3),
        "segments": float(ours[0].first.segment_count),
    }
    return [
        Row(f"Playing the whole {TOP_AAC} rung through JIT from cold (every segment built)",
            peer_name, "CPU s per hour of audio", round(median(cold) * per_hour, 2),
            round(peer_per_hour, 2), "none set (reported)", None, runs=runs,
            extra={**common, **build_extras(ours),
                   "cadenza_cpu_s_runs": ", ".join(f"{v:.2f}" for v in cold),
                   "write_back_complete": "yes" if all(r.written_back for r in ours)
                   else "no"}),
        Row(f"Playing the whole {TOP_AAC} rung through JIT again (warm: hot cache)",
            peer_name, "CPU s per hour of audio", round(median(warm) * per_hour, 2),
            round(peer_per_hour, 2), "none set (reported)", None, runs=runs,
            extra={**common, "cadenza_cpu_s_per_play_runs": ", ".join(f"{v:.4f}" for v in warm),
                   "plain_origin_cpu_s_per_hour": round(median(plain) * per_hour, 2)}),
    ]  # fmt: skip


def storage_row(ours: list[Run], batch_track_bytes: int, runs: int) -> Row:
    """Per catalogue track: JIT keeps what the played 20 % wrote back, batch the whole
    ladder of every track."""
    played = median([float(r.stored_bytes) for r in ours])
    jit_per_track = PLAYED_SHARE * played
    saved_pct = 100.0 * (1.0 - jit_per_track / batch_track_bytes)
    return Row(
        f"Storage per catalogue track, {100 * (1 - PLAYED_SHARE):.0f} % never played "
        f"(JIT: write-back of {TOP_AAC} plays)",
        "batch packaging every track (default ladder, one track's folder)",
        "MB per track",
        round(jit_per_track / 1e6, 3),
        round(batch_track_bytes / 1e6, 3),
        "none set (reported: share saved)",
        None,
        runs=runs,
        extra={
            "saved_pct": round(saved_pct, 2),
            "played_track_written_back_bytes": played,
            "batch_track_bytes": float(batch_track_bytes),
        },
    )


# --------------------------------------------------------------------------- the suite


def run(work: Path, runs: int = 3) -> list[Row]:
    if runs < 1:
        raise ValueError("runs must be >= 1")
    work.mkdir(parents=True, exist_ok=True)
    sources = work / "sources"
    source = make_source(sources / f"{TRACK_NAME}.flac", TRACK_S)
    batch_root = work / "batch-root"
    clean(batch_root)
    log(f"packaging {source.name} with the default ladder (the peer)")
    package = run_process(
        [package_bench.cadenza_path(), "package", str(source), "--out", str(batch_root)]
    )
    batch_track_bytes = tree_bytes(batch_root / TRACK_NAME)
    # The played rung alone, packaged in batch: what JIT's cold play compares with rung
    # for rung (reported beside the row).
    ladder = work / "top-aac.toml"
    kbps = (TOP_AAC_RUNG.bitrate_bps or 0) // 1000
    ladder.write_text(f'name = "top-aac"\n[[rung]]\ncodec = "aac"\nbitrate_kbps = {kbps}\n')
    clean(work / "rung-root")
    rung_package = run_process(
        [package_bench.cadenza_path(), "package", str(source), "--ladder", str(ladder),
         "--out", str(work / "rung-root")]
    )  # fmt: skip
    log(f"packaged in {package.wall_s:.1f} s, {package.cpu_s:.1f} s CPU, "
        f"{batch_track_bytes / 1e6:.1f} MB")  # fmt: skip
    jit_root = work / "jit-root"
    # One short warm-up of each (page cache, bytecode), not counted.
    one_run(jit_root, work, sources, whole=False)
    one_run(batch_root, work, None, whole=False)
    ours, theirs = alternate_runs(
        lambda: one_run(jit_root, work, sources),
        lambda: one_run(batch_root, work, None),
        runs,
    )
    # The same start with a player that names the next segment in CMCD (nor).
    ours_cmcd, theirs_cmcd = alternate_runs(
        lambda: one_run(jit_root, work, sources, whole=False, cmcd=True),
        lambda: one_run(batch_root, work, None, whole=False, cmcd=True),
        runs,
    )
    rows = latency_rows(ours, theirs, runs)
    soon = "as soon as segment 1 arrived"
    rows.append(next_segment_row(ours, theirs, runs, f"{soon}, no CMCD"))
    rows.append(next_segment_row(ours_cmcd, theirs_cmcd, runs, f'{soon}, CMCD nor="seg-00002.m4s"'))
    rows.append(
        next_segment_row(
            ours, theirs, runs, "a segment duration after segment 2 arrived (full buffer)",
            number=PACED_SEGMENT,
        )
    )  # fmt: skip
    rows += cost_rows(ours, theirs, package.cpu_s, rung_package.cpu_s, runs)
    rows.append(storage_row(ours, batch_track_bytes, runs))
    for row in rows:
        log(f"{row.work}: {row.cadenza:.2f} vs {row.peer_value:.2f} {row.metric}")
    return rows


def main() -> None:
    started = time.perf_counter()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="cadenza-jit-bench-") as tmp:
        rows = run(Path(tmp), runs=runs)
    for row in rows:
        print(json.dumps(row.to_dict()))
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
