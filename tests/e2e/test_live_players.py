"""hls.js (``lowLatencyMode``) and dash.js (its low-latency settings) play a live stream
in headless Chromium: ``cadenza live`` packages a generated file in real time, looped,
and ``cadenza serve`` serves it, directly and through the nginx edge we ship.

The tests assert behaviour only (the player plays, its playhead moves, no error, one
buffered range around the playhead, sound).  They measure, and record into the e2e
results file without asserting, the glass-to-glass latency (the wall clock at the
player's ``currentTime`` as the player maps it, through EXT-X-PROGRAM-DATE-TIME or the
MPD's availabilityStartTime, against the page's clock), the stalls, and the time back to
steady playback after the input stops for 5 s (a FIFO the test stops writing to)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest

from samples.make_sample import synthesize, write_audio
from tests.e2e.conftest import ROOT, Drive, free_port, merge_results
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve

pytestmark = pytest.mark.e2e
SOURCE_S = 20.0
# How long each steady run plays; CADENZA_E2E_LIVE_RUN_S=120 measures two minutes.
RUN_S = float(os.environ.get("CADENZA_E2E_LIVE_RUN_S", "25"))
STALL_S = 5.0
STALL_AFTER_S = 12.0  # of the player's run
STALL_RUN_S = 32.0
RATE_HZ = 48000
STEADY_SAMPLES = 4  # 2 s of 0.5 s samples with the playhead moving: steady playback
HLS_SETTINGS: dict[str, Any] = {"lowLatencyMode": True, "backBufferLength": 10}
# dash.js 5's low-latency settings: a 1 s target delay, catch-up by playback rate, the
# L2A-LL rule (its own throughput estimate; the other rules are off) and the throughput
# of chunked downloads measured by parsing their moof boxes as they arrive.
DASH_SETTINGS: dict[str, Any] = {
    "streaming": {
        "delay": {"liveDelay": 1.0},
        "liveCatchup": {
            "enabled": True,
            "mode": "liveCatchupModeDefault",
            "playbackRate": {"min": -0.04, "max": 0.04},
        },
        "abr": {
            "rules": {
                "throughputRule": {"active": False},
                "bolaRule": {"active": False},
                "l2ARule": {"active": True},
            },
            "throughput": {
                "lowLatencyDownloadTimeCalculationMode": (
                    "lowLatencyDownloadTimeCalculationModeMoofParsing"
                ),
            },
        },
    }
}
PLAYERS = {"hls": "master.m3u8", "dash": "manifest.mpd"}
RESULTS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True, slots=True)
class LiveServed:
    origin: str
    edge: str
    root: Path
    feeder: FifoFeeder


class FifoFeeder:
    """Writes a WAV stream (a 440 Hz tone) into a FIFO at 1x wall clock, from a thread;
    :meth:`stall` stops writing for a while, as a live input that stops delivering."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self._stop = threading.Event()
        self._resume_at = 0.0  # monotonic: no writing before this
        self._lock = threading.Lock()
        self.resumed_wall: float | None = None
        self._thread = threading.Thread(target=self._run, name="fifo feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stall(self, seconds: float) -> tuple[float, float]:
        """Stop writing for ``seconds``; the wall-clock instants it stops and resumes."""
        with self._lock:
            self._resume_at = time.monotonic() + seconds
            stopped = time.time()
            return stopped, stopped + seconds

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with contextlib.suppress(BrokenPipeError), self.fifo.open("wb") as sink:
            _write_wav_header(sink)
            chunk_ticks = RATE_HZ // 20
            written = 0
            started = time.monotonic()
            while not self._stop.is_set():
                with self._lock:
                    resume_at = self._resume_at
                now = time.monotonic()
                if now < resume_at:
                    self._stop.wait(resume_at - now)
                    started += time.monotonic() - now  # the clock restarts at resumption
                    continue
                ahead = started + written / RATE_HZ - now
                if ahead > 0:
                    self._stop.wait(ahead)
                elif ahead < -0.1:  # a write blocked (the reader was busy): no burst after it
                    started -= ahead
                t = (np.arange(written, written + chunk_ticks) / RATE_HZ).astype(np.float64)
                tone = (0.3 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2")
                sink.write(np.repeat(tone[:, None], 2, axis=1).tobytes())
                sink.flush()
                written += chunk_ticks


def _write_wav_header(sink: BinaryIO) -> None:
    """A 48 kHz stereo 16-bit WAV header whose sizes say "as long as it takes"."""
    unknown = 0xFFFFFFFF
    sink.write(b"RIFF" + struct.pack("<I", unknown) + b"WAVE")
    sink.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, RATE_HZ, RATE_HZ * 4, 4, 16))
    sink.write(b"data" + struct.pack("<I", unknown))


@contextlib.contextmanager
def cadenza_live(source: str, root: Path, track_id: str, log: Path) -> Iterator[Path]:
    """``cadenza live SOURCE --realtime --loop`` into ``root/track_id``; stopped with
    SIGTERM (it then writes the end of the stream)."""
    argv = [str(Path(sys.executable).with_name("cadenza")), "live", source, "--out", str(root)]
    argv += ["--track-id", track_id, "--realtime", "--loop", "--start-timeout", "30"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield root / track_id
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def _wait_published(folder: Path, log: Path, timeout_s: float = 60.0) -> None:
    """Until the stream's master playlist and MPD are written (after its first part)."""
    deadline = time.monotonic() + timeout_s
    while not ((folder / "master.m3u8").exists() and (folder / "manifest.mpd").exists()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{folder.name} not published: {log.read_text()[-2000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def live_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServed]:
    folder = tmp_path_factory.mktemp("e2e-live")
    source = folder / "steady.flac"
    write_audio(source, synthesize(SOURCE_S, 44100, 2), 44100)
    fifo = folder / "stalled.wav"
    os.mkfifo(fifo)
    feeder = FifoFeeder(fifo)
    root = folder / "root"
    root.mkdir()
    with contextlib.ExitStack() as stack:
        steady = stack.enter_context(
            cadenza_live(str(source), root, "steady", folder / "live-steady.log")
        )
        stalled = stack.enter_context(
            cadenza_live(str(fifo), root, "stalled", folder / "live-stalled.log")
        )
        feeder.start()
        stack.callback(feeder.close)
        _wait_published(steady, folder / "live-steady.log")
        _wait_published(stalled, folder / "live-stalled.log")
        origin = stack.enter_context(cadenza_serve(str(root), folder, cwd=ROOT))
        edge = NginxEdge(folder / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        stack.callback(edge.stop)
        yield LiveServed(origin.url, edge.url, root, feeder)
    merge_results(RESULTS)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _latency_figures(live: dict[str, Any]) -> dict[str, Any]:
    latencies = [s["latency_s"] for s in live["samples"] if s["playing"] and s["latency_s"]]
    reported = [
        s["player_latency_s"]
        for s in live["samples"]
        if s["playing"] and isinstance(s["player_latency_s"], (int, float))
    ]
    return {
        "latency_samples": len(latencies),
        "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(_percentile(latencies, 0.95), 3) if latencies else None,
        "player_latency_median_s": round(statistics.median(reported), 3) if reported else None,
    }


def _stalls(live: dict[str, Any], after_wall: float) -> dict[str, int]:
    return {
        "waiting_events": sum(1 for wall in live["waiting"] if wall >= after_wall),
        "buffer_empty_events": sum(1 for wall in live["buffer_empty"] if wall >= after_wall),
    }


def _steady_from(samples: list[dict[str, Any]], from_wall: float) -> float | None:
    """The wall time of the first sample at or after ``from_wall`` from which the playhead
    moved forward at each of the next :data:`STEADY_SAMPLES` samples."""
    later = [s for s in samples if s["wall"] >= from_wall]
    for index in range(len(later) - STEADY_SAMPLES):
        window = later[index : index + STEADY_SAMPLES + 1]
        moving = all(b["current_time"] > a["current_time"] for a, b in itertools.pairwise(window))
        if moving and all(s["playing"] for s in window):
            return float(window[0]["wall"])
    return None


def _assert_plays_live(final: dict[str, Any]) -> None:
    assert final["fatal"] is None, final["errors"]
    assert final["startup_s"] is not None, "never reached playing"
    samples = [s for s in final["live"]["samples"] if s["playing"]]
    assert samples, "no sample while playing"
    assert final["current_time"] > samples[0]["current_time"], "the playhead did not move"
    buffered = final["buffered"]
    assert len(buffered) == 1, f"holes in the buffer: {buffered}"
    start, end = buffered[0]
    assert start <= final["current_time"] <= end, (final["current_time"], buffered)
    tail = final["live"]["samples"][-STEADY_SAMPLES - 1 :]
    assert tail[-1]["current_time"] > tail[0]["current_time"], "not playing at the end"
    assert final["rms_max"] > 0.01  # sound, not silence


def _play(drive: Drive, player: str, src: str, run_s: float) -> dict[str, Any]:
    settings = {"hls": HLS_SETTINGS} if player == "hls" else {"dash": DASH_SETTINGS}
    result = drive(player=player, src=src, live=True, run_s=run_s, timeout_s=run_s + 30, **settings)
    final: dict[str, Any] = result["final"]
    return final


@pytest.mark.parametrize("via", ["direct", "edge"])
@pytest.mark.parametrize("player", list(PLAYERS))
def test_a_low_latency_player_plays_a_live_stream(
    drive: Drive, live_served: LiveServed, player: str, via: str
) -> None:
    base = live_served.origin if via == "direct" else live_served.edge
    final = _play(drive, player, f"{base}/steady/{PLAYERS[player]}", RUN_S)
    live = final["live"]
    playing = [s for s in live["samples"] if s["playing"]]
    steady_after = playing[0]["wall"] if playing else float("inf")
    figures = {
        **_latency_figures(live),
        **_stalls(live, steady_after),
        "run_s": RUN_S,
        "startup_s": final["startup_s"],
        "played_s": round(final["current_time"] - playing[0]["current_time"], 2)
        if playing
        else 0.0,
        "errors": final["errors"][:10],
        "rms_max": final["rms_max"],
    }
    RESULTS[f"{player} live {via}"] = figures
    print(f"{player} live {via}: {figures}")
    _assert_plays_live(final)
    assert figures["latency_samples"], "the player never mapped its playhead to a wall clock"


@pytest.mark.parametrize("player", list(PLAYERS))
def test_a_low_latency_player_recovers_after_the_input_stalls(
    drive: Drive, live_served: LiveServed, player: str
) -> None:
    stall: dict[str, float] = {}

    def stall_later() -> None:
        stall["stopped"], stall["resumed"] = live_served.feeder.stall(STALL_S)

    timer = threading.Timer(STALL_AFTER_S, stall_later)
    timer.start()
    try:
        final = _play(drive, player, f"{live_served.origin}/stalled/{PLAYERS[player]}", STALL_RUN_S)
    finally:
        timer.cancel()
    assert stall, "the run ended before the input stalled"
    live = final["live"]
    steady = _steady_from(live["samples"], stall["resumed"])
    figures = {
        **_latency_figures(live),
        **_stalls(live, stall["stopped"]),
        "input_stall_s": STALL_S,
        "recovery_s": round(max(0.0, steady - stall["resumed"]), 2) if steady else None,
        "errors": final["errors"][:10],
    }
    RESULTS[f"{player} live input stall"] = figures
    print(f"{player} live input stall: {figures}")
    assert final["fatal"] is None, final["errors"]
    assert steady is not None, "playback never steady again after the input resumed"
