"""hls.js (``lowLatencyMode``) and dash.js (its low-latency settings) play a live stream
in headless Chromium: ``cadenza live`` packages a generated file in real time, looped,
and ``cadenza serve`` serves it, directly and through the nginx edge we ship.

The tests assert behaviour only (the player plays, its playhead moves, no error, one
buffered range around the playhead, sound).  They measure, and record into the e2e
results file without asserting, the latency as the player maps it (the wall clock at the
player's ``currentTime``, through EXT-X-PROGRAM-DATE-TIME or the MPD's
availabilityStartTime, against the page's clock), the stalls, and the time back to
steady playback after the input stops for 5 s (a FIFO the test stops writing to).

Glass to glass: a third track, ``pips``, is fed a WAV stream whose audio carries its
capture wall clock as tone pips (tests/e2e/pip_feeder.py); the page hears each pip in
what the player plays and records when it reached the audio output.  Asserted: the pips
are heard, once a period (the audio played is continuous); recorded: that latency beside
the mapped one.  The stalled track carries the same pips."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from samples.make_sample import synthesize, write_audio
from tests.e2e.conftest import ROOT, Drive, free_port, merge_results
from tests.e2e.pip_feeder import PIP_CODES_HZ, PIP_PERIOD_S, FifoFeeder, pip_captured_at, pips
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve

pytestmark = pytest.mark.e2e
SOURCE_S = 20.0
# How long each steady run plays; CADENZA_E2E_LIVE_RUN_S=120 measures two minutes.
RUN_S = float(os.environ.get("CADENZA_E2E_LIVE_RUN_S", "25"))
STALL_S = 5.0
STALL_AFTER_S = 12.0  # of the player's run
STALL_RUN_S = 32.0
EDGE_S = 0.05  # the float slack of a buffered range's ends (_assert_plays_live)
STEADY_SAMPLES = 4  # 2 s of 0.5 s samples with the playhead moving: steady playback
PIP_RESUME_S = 0.3  # a pip heard this soon after playback (re)started: maybe its rest
# hls.js catches up by playing faster only when maxLiveSyncPlaybackRate is above 1 (its
# default): up to 4 % faster, as dash.js below, while more than about 0.07 s behind its
# target with over 1 s buffered.  Its target grows by liveSyncOnStallIncrease (default 1 s)
# at each stall of its own: after the input stalls it would then sit 1 s behind, at its
# new target, with nothing to catch up.
HLS_SETTINGS: dict[str, Any] = {
    "lowLatencyMode": True,
    "backBufferLength": 10,
    "maxLiveSyncPlaybackRate": 1.04,
    "liveSyncOnStallIncrease": 0.1,
    # Back to the live edge when more than 3 s behind (hls.js's default never does);
    # it must come with liveSyncDuration, which then replaces PART-HOLD-BACK as the
    # target: the same 0.96 s, three 0.32 s parts.
    "liveSyncDuration": 0.96,
    "liveMaxLatencyDuration": 3.0,
}
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
    feeder = FifoFeeder(fifo, pips)  # the wall clock in the audio, across the stall too
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


@pytest.fixture(scope="module")
def pips_track(
    live_served: LiveServed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FifoFeeder]:
    """A third live track, ``pips``: ``cadenza live`` reading a WAV stream whose audio
    carries its capture wall clock as pips (tests/e2e/pip_feeder.py), written at 1x into
    a FIFO, in the root the origin serves.  Started only for the cases that play it;
    its feeder is yielded (the track is ``pips``)."""
    folder = tmp_path_factory.mktemp("e2e-live-pips")
    fifo = folder / "pips.wav"
    os.mkfifo(fifo)
    feeder = FifoFeeder(fifo, pips)
    with contextlib.ExitStack() as stack:
        track = stack.enter_context(
            cadenza_live(str(fifo), live_served.root, "pips", folder / "live-pips.log")
        )
        feeder.start()
        stack.callback(feeder.close)
        _wait_published(track, folder / "live-pips.log")
        yield feeder


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


def _g2g_figures(live: dict[str, Any]) -> dict[str, Any]:
    """Glass-to-glass latency from the pips the page heard: each pip's played-out wall time
    minus its capture instant; whether they came once a period (the audio continuous);
    and, per pip, how far the player's own mapping (the nearest latency sample) was off."""
    found = live.get("pips") or {}
    heard = found.get("detections", [])
    # A pip heard just after playback started or resumed may be the rest of one.
    kept = [d for d in heard if not any(0 <= d["wall"] - w < PIP_RESUME_S for w in live["playing"])]
    for pip in kept:  # the page's reading of each pip's pitch, checked
        assert pip["captured"] == pip_captured_at(pip["wall"], pip["code"]), pip
    latencies = [d["latency_s"] for d in kept]
    steps = [
        round((b["captured"] - a["captured"]) / PIP_PERIOD_S) for a, b in itertools.pairwise(kept)
    ]
    periods = [
        b["wall"] - a["wall"]
        for (a, b), step in zip(itertools.pairwise(kept), steps, strict=True)
        if step == 1
    ]
    mapped = [s for s in live["samples"] if s["playing"] and s["latency_s"]]
    off: list[float] = []
    for pip in kept:
        nearest = min(mapped, key=lambda s: abs(s["wall"] - pip["wall"]), default=None)
        if nearest is not None and abs(nearest["wall"] - pip["wall"]) <= 0.5:
            off.append(pip["latency_s"] - nearest["latency_s"])
    return {
        "g2g_pips": len(kept),
        "g2g_pips_set_aside": len(heard) - len(kept),
        "g2g_pips_unclear": len(found.get("unclear", [])),
        "g2g_pips_missing": sum(step - 1 for step in steps if step > 1),
        "g2g_pips_repeated": sum(1 for step in steps if step < 1),
        "g2g_latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "g2g_latency_p95_s": round(_percentile(latencies, 0.95), 3) if latencies else None,
        "g2g_latency_max_s": round(max(latencies), 3) if latencies else None,
        "g2g_period_median_s": round(statistics.median(periods), 3) if periods else None,
        "g2g_minus_mapped_median_s": round(statistics.median(off), 3) if off else None,
        "g2g_mapping": sorted({d["mapping"] for d in kept}),
        "g2g_error": found.get("error"),
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
    now = final["current_time"]
    # Buffered ends fall on frame boundaries in float seconds: a playhead that has just
    # reached the newest data reads a hair past its range's end (53.76 against
    # 53.759999); the playhead must still be moving at the end (below).
    around = [r for r in buffered if r[0] - EDGE_S <= now <= r[1] + EDGE_S]
    assert around, (now, buffered)
    # One buffered range; or, when the player itself jumped ahead to the live edge
    # (hls.js's liveMaxLatencyDuration, after falling behind on a loaded machine), the
    # hole it jumped over lies behind the playhead, never ahead of it.
    jumped = bool(final["live"].get("seeks"))
    assert len(buffered) == 1 or (jumped and around[0] == buffered[-1]), (
        f"holes in the buffer: {buffered}, seeks {final['live'].get('seeks')}"
    )
    tail = final["live"]["samples"][-STEADY_SAMPLES - 1 :]
    assert tail[-1]["current_time"] > tail[0]["current_time"], "not playing at the end"
    assert final["rms_max"] > 0.01  # sound, not silence


def _play(
    drive: Drive, player: str, src: str, run_s: float, *, pips_in_audio: bool = False
) -> dict[str, Any]:
    """Play ``src`` live for ``run_s``; ``pips_in_audio``: the page listens for the wall
    clock's pips (glass-to-glass latency, in ``final["live"]["pips"]``)."""
    settings: dict[str, Any] = {"hls": HLS_SETTINGS} if player == "hls" else {"dash": DASH_SETTINGS}
    if pips_in_audio:
        settings["pips"] = {"period_s": PIP_PERIOD_S, "freqs_hz": list(PIP_CODES_HZ)}
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
        "seeks": live.get("seeks", [])[:10],
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
        src = f"{live_served.origin}/stalled/{PLAYERS[player]}"
        final = _play(drive, player, src, STALL_RUN_S, pips_in_audio=True)
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
        **_g2g_figures(live),
        # glass to glass of the pips heard once steady again: the latency it recovered to
        "g2g_latency_after_s": [
            round(d["latency_s"], 3)
            for d in (live.get("pips") or {}).get("detections", [])
            if steady and d["wall"] >= steady
        ],
        "errors": final["errors"][:10],
    }
    RESULTS[f"{player} live input stall"] = figures
    print(f"{player} live input stall: {figures}")
    assert final["fatal"] is None, final["errors"]
    assert steady is not None, "playback never steady again after the input resumed"


@pytest.mark.parametrize("via", ["direct", "edge"])
@pytest.mark.parametrize("player", list(PLAYERS))
def test_glass_to_glass_latency_from_the_wall_clock_in_the_audio(
    drive: Drive, live_served: LiveServed, pips_track: FifoFeeder, player: str, via: str
) -> None:
    """The ``pips`` track carries its capture wall clock as a pip every
    :data:`PIP_PERIOD_S`; the page hears them in what the player plays.  Asserted: pips
    heard, once a period (none missing or repeated: the audio played is continuous);
    recorded: the glass-to-glass latency beside the player's mapped one."""
    base = live_served.origin if via == "direct" else live_served.edge
    skipped_before = pips_track.chunks_skipped
    final = _play(drive, player, f"{base}/pips/{PLAYERS[player]}", RUN_S, pips_in_audio=True)
    live = final["live"]
    playing = [s for s in live["samples"] if s["playing"]]
    figures = {
        **_g2g_figures(live),
        **_latency_figures(live),
        **_stalls(live, playing[0]["wall"] if playing else float("inf")),
        "run_s": RUN_S,
        "startup_s": final["startup_s"],
        # 20 ms chunks of input the feeder could not write on time (the reader or this
        # process held up): a dropout in the input, not downstream
        "input_dropouts": pips_track.chunks_skipped - skipped_before,
        "errors": final["errors"][:10],
    }
    RESULTS[f"{player} live pips {via}"] = figures
    print(f"{player} live pips {via}: {figures}")
    assert figures["g2g_error"] is None, figures["g2g_error"]
    _assert_plays_live(final)
    assert figures["g2g_pips"] >= 2, "fewer than two pips heard"
    assert figures["g2g_pips_repeated"] == 0, "a pip played twice"
    # A pip set aside (heard as playback resumed) may hide one: any other is a hole,
    # unless the input itself lost audio (a loaded machine held the feeder up past
    # its 0.1 s slack): that hole is upstream of everything under test.
    if not figures["input_dropouts"]:
        assert figures["g2g_pips_missing"] <= figures["g2g_pips_set_aside"], "pips missing"
    period_s = figures["g2g_period_median_s"]
    assert period_s is not None, "no two pips a period apart"
    assert abs(period_s - PIP_PERIOD_S) <= 0.1 * PIP_PERIOD_S, period_s
