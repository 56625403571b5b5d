"""``cadenza live`` against a real HTTP server on loopback that serves an endless
ADTS AAC stream the way Icecast does (``200``, no length, the frames paced at 1x from
the live position, so a listener that reconnects has missed what was sent meanwhile):
the server drops the connection mid-stream, or stops listening for a while, or
accepts and never sends, or is not there at all, or changes the stream's rate and
layout mid-stream.

The command runs as a subprocess, as an operator runs it: its exit status, its log on
stderr and the ``live.json`` it leaves are what is checked."""

from __future__ import annotations

import asyncio
import bisect
import io
import itertools
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import av
import numpy as np
import pytest

from cadenza.manifests.live import LIVE_STATE_NAME, LivePresentation, LiveRendition
from cadenza.manifests.live_json import live_from_json
from cadenza.manifests.llhls import GAP_DATERANGE_CLASS
from cadenza.packager.live.grid import LIVE_RATE_HZ
from tests.packager.live_support import decode, stream_bytes

STREAM_RATE_HZ: Final = 44100  # the ingest resamples it to the 48 kHz grid
AAC_FRAME_TICKS: Final = 1024
STREAM_S: Final = 40.0  # more than any test listens for; the stream ends after it
PART_TICKS: Final = 15360
COMMAND_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class AdtsFrame:
    data: bytes
    at_s: float  # where it starts in the stream
    duration_s: float


def _adts_frames(
    seconds: float, rate_hz: int = STREAM_RATE_HZ, layout: str = "stereo", at_s: float = 0.0
) -> list[AdtsFrame]:
    """A 440 Hz tone encoded as ADTS AAC, split into its frames (ISO/IEC 13818-7
    6.2: a 12-bit sync word, the frame's length in 13 bits of the header)."""
    ticks = round(seconds * rate_hz)
    t = np.arange(ticks) / rate_hz
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    channels = av.AudioLayout(layout).nb_channels
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate_hz, layout=layout)
        for start in range(0, ticks, AAC_FRAME_TICKS):
            chunk = np.repeat(wave[None, start : start + AAC_FRAME_TICKS], channels, axis=0)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate_hz
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = buffer.getvalue()
    frames: list[AdtsFrame] = []
    at = 0
    frame_s = AAC_FRAME_TICKS / rate_hz
    while at + 7 <= len(data):
        assert data[at] == 0xFF and data[at + 1] & 0xF0 == 0xF0, "ADTS sync lost"
        length = ((data[at + 3] & 0x03) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
        frames.append(AdtsFrame(data[at : at + length], at_s + len(frames) * frame_s, frame_s))
        at += length
    return frames


@dataclass
class Behaviour:
    """What the server does: drop the first connection after ``drop_after_s`` of
    audio (a reset mid-frame, or the response ends at a frame boundary, with or
    without a Content-Length saying so); then stop listening for ``refuse_for_s``
    (connections are refused), or stall it (``stall``: nothing more is sent, the
    connection stays open); or accept and never send a byte (``silent``)."""

    drop_after_s: float | None = None
    reset: bool = True  # the drop is a reset (else the response just ends: a FIN)
    declare_length: bool = False  # the first response has a Content-Length (ends cleanly)
    refuse_for_s: float = 0.0
    silent: bool = False
    stall: bool = False  # the drop is a stall: nothing more is sent, the connection kept


@dataclass
class Served:
    """What happened, for the assertions: connections accepted, when the listener
    was closed and opened again (monotonic seconds)."""

    connections: int = 0
    drops: int = 0
    refused_from_s: float | None = None
    listening_again_s: float | None = None
    errors: list[str] = field(default_factory=list)


class IcecastLikeServer:
    """An asyncio HTTP/1.0 server on 127.0.0.1 in a thread of its own."""

    def __init__(self, frames: list[AdtsFrame], behaviour: Behaviour) -> None:
        self._frames = frames
        self._starts = [f.at_s for f in frames]
        self._behaviour = behaviour
        self.served = Served()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="icecast-like", daemon=True)
        self._origin_s: float | None = None  # the stream's start: the first connection

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    def __enter__(self) -> IcecastLikeServer:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive()
        assert not self.served.errors, self.served.errors

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(self._listen(0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for task in self._tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            if self._server is not None:
                self._server.close()
                self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _listen(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.served.connections += 1
        try:
            await self._serve(reader, writer, first=self.served.connections == 1)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # reported by __exit__
            self.served.errors.append(repr(exc))
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, first: bool
    ) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /stream "), request
        behaviour = self._behaviour
        if behaviour.silent:
            await reader.read()  # until the client goes
            return
        # The live position: what a listener connecting now hears first.
        if self._origin_s is None:
            self._origin_s = time.monotonic()
        index = self._frame_at(time.monotonic() - self._origin_s)
        drop_at = None
        if first and behaviour.drop_after_s is not None:
            drop_at = self._frame_at(self._starts[index] + behaviour.drop_after_s)
        length = b""
        if drop_at is not None and behaviour.declare_length:
            size = sum(len(f.data) for f in self._frames[index:drop_at])
            length = b"Content-Length: %d\r\n" % size
        writer.write(
            b"HTTP/1.0 200 OK\r\nContent-Type: audio/aac\r\nicy-name: test tone\r\n"
            b"Cache-Control: no-cache\r\n" + length + b"\r\n"
        )
        while index < len(self._frames):
            if index == drop_at and behaviour.stall:
                self.served.drops += 1
                await reader.read()  # until the client gives up
                return
            if index == drop_at:
                await self._drop(writer)
                return
            frame = self._frames[index]
            writer.write(frame.data)
            await writer.drain()
            index += 1
            due = self._origin_s + frame.at_s + frame.duration_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _drop(self, writer: asyncio.StreamWriter) -> None:
        """The connection is cut: half a frame and a reset (as when a relay dies), or
        the response just ends; with ``refuse_for_s`` the listener closes for that
        long too."""
        self.served.drops += 1
        if self._behaviour.reset:
            writer.write(self._frames[0].data[:50])
            await writer.drain()
        if self._behaviour.refuse_for_s > 0:
            assert self._server is not None
            self._server.close()
            self.served.refused_from_s = time.monotonic()
            self._loop.call_later(self._behaviour.refuse_for_s, self._listen_again)
        if self._behaviour.reset:
            writer.transport.abort()

    def _frame_at(self, stream_s: float) -> int:
        return max(0, bisect.bisect_right(self._starts, stream_s) - 1)

    def _listen_again(self) -> None:
        async def reopen() -> None:
            self._server = await self._listen(self.port)
            self.served.listening_again_s = time.monotonic()

        task = self._loop.create_task(reopen())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@pytest.fixture(scope="module")
def tone_frames() -> list[AdtsFrame]:
    return _adts_frames(STREAM_S)


@dataclass
class Run:
    status: int
    log: str
    final: LivePresentation | None
    folder: Path


def _live(url: str, out: Path, *flags: str) -> Run:
    command = ["live", url, "--out", str(out), "--track-id", "r", *flags]
    done = subprocess.run(
        [sys.executable, "-m", "cadenza", *command],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    state = out / "r" / LIVE_STATE_NAME
    final = live_from_json(state.read_bytes()) if state.exists() else None
    return Run(done.returncode, done.stderr, final, out / "r")


def _spans(r: LiveRendition) -> Iterator[tuple[int, int, bool]]:
    for s in r.segments:
        yield s.start_ticks, s.start_ticks + s.duration_ticks, s.gap


def _parts(r: LiveRendition) -> list[tuple[int, int, bool]]:
    """Every part in the window: (start tick, end tick, made of the stall's silence)."""
    parts = []
    for s in r.segments:
        start = s.start_ticks
        for p in s.parts:
            parts.append((start, start + p.duration_ticks, s.gap or p.gap))
            start += p.duration_ticks
    return parts


def _longest_gap_ticks(r: LiveRendition) -> int:
    longest = run = 0
    for start, end, gap in _parts(r):
        run = run + end - start if gap else 0
        longest = max(longest, run)
    return longest


def _assert_contiguous_with_a_gap(run: Run, max_s: float) -> None:
    """Every rendition's timeline runs from 0 without a jump; the time the input could
    not be read is parts marked gap (each run of them an EXT-X-DATERANGE of the gap
    class), with media before and after them; the stream ended (ENDLIST) after
    ``max_s`` of media."""
    final = run.final
    assert final is not None and final.ended
    skeletons = set()
    for r in final.renditions:
        parts = _parts(r)
        assert parts[0][0] == 0
        for (_, end, _), (start, _, _) in itertools.pairwise(parts):
            assert start == end, (r.id, parts)
        assert 0 <= parts[-1][1] - max_s * LIVE_RATE_HZ < r.frame_ticks
        kinds = [gap for _, _, gap in parts]
        first_gap = kinds.index(True)
        assert first_gap > 0, "media before the gap"
        assert not all(kinds[first_gap:]) and kinds[-1] is False, "media after the gap"
        for s in r.segments:
            assert s.init == 0 and not s.discontinuity
            assert s.start_ticks % PART_TICKS == 0
            for p in s.parts:  # gap parts too: they hold the silence encoded meanwhile
                assert p.size_bytes > 0
                assert (run.folder / r.id / p.name(s.number)).stat().st_size == p.size_bytes
        decoded = decode(stream_bytes(run.folder, r))
        assert decoded.shape[1] == parts[-1][1]
        assert float(np.max(np.abs(decoded[:, -LIVE_RATE_HZ:]))) > 0.1, "the tone, after"
        skeletons.add(tuple((start, gap) for start, _, gap in parts))
        playlist = (run.folder / r.id / "playlist.m3u8").read_text()
        assert "#EXT-X-ENDLIST" in playlist
        assert f'CLASS="{GAP_DATERANGE_CLASS}"' in playlist  # the gap, dated
        assert "#EXT-X-GAP" not in playlist  # its parts hold silence: not "no media"
    assert len(skeletons) == 1, "every rendition has the same parts and gaps"
    assert 'type="static"' in (run.folder / "manifest.mpd").read_text()


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (Behaviour(drop_after_s=2.5), "reading stopped: Input/output error"),
        (Behaviour(drop_after_s=2.5, reset=False, declare_length=True), "the stream ended"),
    ],
    ids=["reset", "ended"],
)
def test_a_dropped_connection_is_reconnected_and_the_gap_marked(
    tone_frames: list[AdtsFrame], tmp_path: Path, behaviour: Behaviour, reason: str
) -> None:
    max_s = 7.0
    with IcecastLikeServer(tone_frames, behaviour) as server:
        run = _live(server.url, tmp_path, "--max-duration", f"{max_s:g}")
    assert run.status == 0, run.log
    assert server.served.drops == 1
    assert server.served.connections == 2
    said = rf"{re.escape(server.url)}: {reason}; reconnecting \(attempt 1, at \d+\.\d\d s\)"
    assert re.search(said, run.log), run.log
    assert f"{server.url}: reconnected: audio again after" in run.log, run.log
    _assert_contiguous_with_a_gap(run, max_s)


def test_a_stalled_connection_is_given_up_after_the_read_timeout(
    tone_frames: list[AdtsFrame], tmp_path: Path
) -> None:
    """The server keeps the connection and stops sending: the time is gap segments
    while it lasts, and after FFmpeg's read timeout (10 s) the input is reopened."""
    max_s = 16.0
    with IcecastLikeServer(tone_frames, Behaviour(drop_after_s=2.0, stall=True)) as server:
        run = _live(server.url, tmp_path, "--max-duration", f"{max_s:g}")
    assert run.status == 0, run.log
    assert server.served.connections == 2
    assert f"{server.url}: reading stopped: nothing came for 10 s; reconnecting" in run.log
    _assert_contiguous_with_a_gap(run, max_s)
    assert run.final is not None
    for r in run.final.renditions:
        assert _longest_gap_ticks(r) >= 10 * LIVE_RATE_HZ - 2 * PART_TICKS


def test_a_stop_after_a_reconnect_ends_the_stream_and_keeps_the_window(
    tone_frames: list[AdtsFrame], tmp_path: Path
) -> None:
    """A network stream has no end: SIGTERM ends it.  After a reconnect the DVR window
    still drops old segments and their files, and the end is ENDLIST."""
    with IcecastLikeServer(tone_frames, Behaviour(drop_after_s=1.0)) as server:
        command = ["live", server.url, "--out", str(tmp_path), "--track-id", "r", "--window", "3"]
        process = subprocess.Popen(
            [sys.executable, "-m", "cadenza", *command],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            state = tmp_path / "r" / LIVE_STATE_NAME
            deadline = time.monotonic() + 30
            # Polls for the condition: reconnected, and the window trimmed since.
            while server.served.connections < 2 or _first_number(state) < 4:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            _, log = process.communicate(timeout=COMMAND_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, log
    assert "interrupted; ending the stream" in log
    final = live_from_json(state.read_bytes())
    assert final.ended
    for r in final.renditions:
        assert r.segments[0].number >= 4
        for (_, end, _), (start, _, _) in itertools.pairwise(_spans(r)):
            assert start == end
        # The window: the newest segments covering at least 3 s, not one more.
        assert sum(s.duration_ticks for s in r.segments[1:]) < 3 * LIVE_RATE_HZ
        assert not list((tmp_path / "r" / r.id).glob("seg-00001*"))
        assert "#EXT-X-ENDLIST" in (tmp_path / "r" / r.id / "playlist.m3u8").read_text()
    assert 'type="static"' in (tmp_path / "r" / "manifest.mpd").read_text()


def _first_number(state: Path) -> int:
    if not state.exists():
        return 0
    return live_from_json(state.read_bytes()).renditions[0].segments[0].number


def test_a_server_that_refuses_connections_for_a_while(
    tone_frames: list[AdtsFrame], tmp_path: Path
) -> None:
    """Stopped listening for 3 s: the refusals are logged (a new reason), and the
    time without input, longer than the refusal, is gap segments (but for the parts
    it begins and ends in)."""
    max_s = 9.0
    refuse_s = 3.0
    behaviour = Behaviour(drop_after_s=2.0, refuse_for_s=refuse_s)
    with IcecastLikeServer(tone_frames, behaviour) as server:
        run = _live(server.url, tmp_path, "--max-duration", f"{max_s:g}")
    assert run.status == 0, run.log
    assert server.served.listening_again_s is not None
    assert server.served.connections == 2
    refused = f"{server.url}: FFmpeg cannot open it: Connection refused; reconnecting (attempt 2"
    assert refused in run.log, run.log
    assert "reconnected: audio again after" in run.log
    _assert_contiguous_with_a_gap(run, max_s)
    assert run.final is not None
    for r in run.final.renditions:
        # The whole parts of the time without input; the parts it begins and ends in
        # hold media and silence.
        assert _longest_gap_ticks(r) >= refuse_s * LIVE_RATE_HZ - 2 * PART_TICKS


def test_a_server_that_never_sends_fails_after_the_start_timeout(
    tone_frames: list[AdtsFrame], tmp_path: Path
) -> None:
    """Accepted, and not a byte: the open is still waiting when --start-timeout ends it."""
    with IcecastLikeServer(tone_frames, Behaviour(silent=True)) as server:
        run = _live(server.url, tmp_path, "--start-timeout", "2", "-q")
    assert run.status == 1, run.log
    assert server.served.connections == 1
    message = f"cadenza live: {server.url}: no audio arrived within 2 s (--start-timeout)\n"
    assert message in run.log, run.log
    assert run.final is None and not (tmp_path / "r").exists()


def test_a_server_that_is_not_there_fails_after_the_start_timeout(tmp_path: Path) -> None:
    with IcecastLikeServer([], Behaviour()) as server:
        url = server.url  # the port is free again once the server is gone
    run = _live(url, tmp_path, "--start-timeout", "2", "-q")
    assert run.status == 1, run.log
    message = (
        f"cadenza live: {url}: no audio arrived within 2 s (--start-timeout); "
        "the last attempt: FFmpeg cannot open it: Connection refused\n"
    )
    assert message in run.log, run.log
    # -q: the first refusal is a warning, the same again is not
    assert run.log.count("reconnecting (attempt") == 1, run.log
    assert run.final is None and not (tmp_path / "r").exists()


def test_a_rate_and_layout_change_mid_stream(tmp_path: Path) -> None:
    """44.1 kHz stereo, then 48 kHz mono, on one connection: the reader conforms both
    to the 48 kHz grid and the layout it started with, so the outputs' format (the
    ladder's) does not change: a discontinuity and a new init index mark the change,
    and the new init segments have the same bytes as the first ones."""
    before = _adts_frames(4.0)
    change_s = before[-1].at_s + before[-1].duration_s
    frames = before + _adts_frames(20.0, 48000, "mono", at_s=change_s)
    with IcecastLikeServer(frames, Behaviour()) as server:
        run = _live(server.url, tmp_path, "--max-duration", "7")
    assert run.status == 0, run.log
    assert server.served.connections == 1
    assert "to 48000 Hz mono: new init segments, discontinuity" in run.log, run.log
    assert run.final is not None and run.final.ended
    for r in run.final.renditions:
        assert r.channels == 2
        assert [s.init for s in r.segments if s.discontinuity] == [1]
        assert {s.init for s in r.segments} == {0, 1}
        assert not any(s.gap for s in r.segments)
        spans = list(_spans(r))
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert start == end, (r.id, spans)
        folder = run.folder / r.id
        assert (folder / "init-1.mp4").read_bytes() == (folder / "init-0.mp4").read_bytes()
        assert decode(stream_bytes(run.folder, r)).shape[1] == spans[-1][1]
