"""The live input: anything FFmpeg opens (a file, an HTTP/Icecast stream, SRT or RTMP
where the build has them), demuxed and decoded on a thread of its own and handed
over normalised to the ingest format: planar float at
:data:`~cadenza.packager.live.grid.LIVE_RATE_HZ`, in the layout it started with.

The ingest reads with a timeout (:meth:`LiveInput.read`), so a source that stops
delivering is noticed while the wall clock runs on.  A network source that fails or
ends is reopened a second later, again and again (:class:`Reconnecting` tells the
ingest each time; an Icecast server hands a listener that comes back the live
position, so what was missed meanwhile is lost and the ingest marks it a gap); a file
ends, or with ``loop`` starts again on the same timeline.  With ``realtime`` a file
is paced at 1x wall clock.  FFmpeg's ``timeout`` bounds both the open and each read
(:data:`OPEN_TIMEOUT_S`): a server that accepts and then sends nothing is given up
after it and reconnected.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from cadenza.packager.decode import DECODE_FORMAT, Block
from cadenza.packager.encode import LAYOUTS
from cadenza.packager.live.grid import LIVE_RATE_HZ

log = logging.getLogger(__name__)

QUEUE_BLOCKS: Final = 64  # about 1.4 s of 1024-sample frames: bounds a fast file's lead
RECONNECT_WAIT_S: Final = 1.0
OPEN_TIMEOUT_S: Final = 10.0
REALTIME_BLOCK_TICKS: Final = 1024
# FFmpeg format options for a stream: analyse a quarter second, 32 KiB (audio headers
# say all there is to say within a packet or two).
STREAM_PROBE: Final = {"analyzeduration": "250000", "probesize": "32768"}


@dataclass(frozen=True, slots=True)
class FormatChange:
    """The input's rate or channel layout changed; ``reason`` says from what to what."""

    reason: str


@dataclass(frozen=True, slots=True)
class EndOfInput:
    reason: str


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """A network input failed or ended and is reopened :data:`RECONNECT_WAIT_S` later;
    ``reason`` says why, ``attempt`` counts the tries since audio last came (1 first)."""

    reason: str
    attempt: int


Item = Block | FormatChange | EndOfInput | Reconnecting


class LiveSource(Protocol):
    """What the ingest reads: a block, a format change, a reconnect, the end, or None
    when nothing came within ``timeout_s`` (None: wait as long as it takes)."""

    @property
    def layout(self) -> str: ...

    def read(self, timeout_s: float | None) -> Item | None: ...

    def close(self) -> None: ...


def ingest_layout(channels: int) -> str:
    """The layout blocks are normalised to: the source's own when a rung can take it
    (mono, stereo, 5.1), else stereo."""
    return LAYOUTS.get(channels, "stereo")


def is_network(url: str) -> bool:
    return "://" in url and not url.startswith("file:")


class LiveInput:
    """Decodes ``url`` on a daemon thread; :meth:`read` hands the blocks over."""

    def __init__(
        self,
        url: str,
        *,
        realtime: bool = False,
        loop: bool = False,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._realtime = realtime
        self._loop = loop
        self._open_timeout_s = open_timeout_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._queue: queue.Queue[Item] = queue.Queue(QUEUE_BLOCKS)
        self._stop = threading.Event()
        self._layout: str | None = None
        self._started = 0.0  # monotonic instant of the first read (realtime pacing)
        self._ticks = 0  # samples handed over
        self._thread = threading.Thread(target=self._run, name="live input", daemon=True)
        self._thread.start()

    @property
    def layout(self) -> str:
        assert self._layout is not None, "read a block first"
        return self._layout

    def read(self, timeout_s: float | None) -> Item | None:
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    # -- the reader thread ------------------------------------------------------
    def _put(self, item: Item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            self._read_all()
        except Exception as exc:  # reported to the ingest, which ends the stream
            log.exception("%s: the input reader failed", self.url)
            self._put(EndOfInput(f"the input reader failed: {exc}"))

    def _read_all(self) -> None:
        fmt: tuple[int, str] | None = None
        resampler: AudioResampler | None = None
        network = is_network(self.url)
        attempt = 0  # reconnects since audio last came
        self._started = self._monotonic()
        while not self._stop.is_set():
            try:
                for frame in self._frames():
                    attempt = 0
                    new_fmt = (frame.sample_rate, frame.layout.name)
                    if fmt is None:
                        self._layout = ingest_layout(frame.layout.nb_channels)
                    elif new_fmt != fmt:
                        reason = (
                            f"input went from {fmt[0]} Hz {fmt[1]} to {new_fmt[0]} Hz {new_fmt[1]}"
                        )
                        if resampler is not None:  # what the old one still holds
                            self._hand_over(resampler.resample(None))
                        self._put(FormatChange(reason))
                    if new_fmt != fmt or resampler is None:
                        fmt = new_fmt
                        resampler = AudioResampler(
                            format=DECODE_FORMAT, layout=self.layout, rate=LIVE_RATE_HZ
                        )
                    self._hand_over(resampler.resample(frame))
                    if self._stop.is_set():
                        return
                reason = "the stream ended"
            except _ReadFailedError as exc:
                if not network:
                    self._put(EndOfInput(exc.reason))
                    return
                reason = exc.reason
            if self._stop.is_set():
                return
            if network:  # the ingest logs it, and marks the time without input a gap
                # A fresh resampler for the next connection.  The few samples the old
                # one holds are dropped, as the decoder's are: the failure may be seen
                # only after a stall was filled, and they would land after the gap.
                resampler = None
                attempt += 1
                self._put(Reconnecting(reason, attempt))
                self._stop.wait(RECONNECT_WAIT_S)
                continue
            if not self._loop:
                if resampler is not None:
                    self._hand_over(resampler.resample(None))
                self._put(EndOfInput("the input ended"))
                return

    def _hand_over(self, frames: list[AudioFrame]) -> None:
        for out in frames:
            samples: Block = np.asarray(out.to_ndarray(), dtype=np.float32)
            for block in self._paced(samples):
                self._ticks += block.shape[1]
                if self._realtime:
                    ahead = self._started + self._ticks / LIVE_RATE_HZ - self._monotonic()
                    if ahead > 0:
                        self._sleep(ahead)
                self._put(block)

    def _paced(self, samples: Block) -> Iterator[Block]:
        """The samples as blocks; paced in real time, in blocks of at most a codec
        frame, as a live source delivers them (a FLAC file's 4096-sample frames would
        otherwise hold each part back by most of a frame)."""
        step = REALTIME_BLOCK_TICKS if self._realtime else samples.shape[1]
        for start in range(0, samples.shape[1], step):
            block: Block = np.ascontiguousarray(samples[:, start : start + step], dtype=np.float32)
            block.flags.writeable = False
            yield block

    def _frames(self) -> Iterator[AudioFrame]:
        target = self.url if is_network(self.url) else str(Path(self.url))
        # A stream (network, pipe): probe briefly.  FFmpeg's default analyses 5 s of it
        # before opening returns, then hands that backlog over at once, and the timeline
        # leads the wall clock (the availability start, EXT-X-PROGRAM-DATE-TIME) by it.
        live = is_network(self.url) or not Path(self.url).is_file()
        try:
            container = av.open(
                target,
                mode="r",
                timeout=self._open_timeout_s,
                container_options=STREAM_PROBE if live else None,
            )
        except av.error.ExitError as exc:  # PyAV's timeout interrupts FFmpeg with this
            raise _ReadFailedError(
                f"nothing came within {self._open_timeout_s:g} s of connecting"
            ) from exc
        except av.error.FFmpegError as exc:
            raise _ReadFailedError(f"FFmpeg cannot open it: {exc.strerror}") from exc
        with container:
            if not container.streams.audio:
                raise _ReadFailedError("it has no audio stream")
            stream = container.streams.audio[0]
            try:
                for packet in container.demux(stream):
                    try:
                        yield from packet.decode()
                    except av.error.InvalidDataError:
                        continue  # one damaged packet: skip it, as a player would
            except av.error.ExitError as exc:
                raise _ReadFailedError(
                    f"reading stopped: nothing came for {self._open_timeout_s:g} s"
                ) from exc
            except av.error.FFmpegError as exc:
                raise _ReadFailedError(f"reading stopped: {exc.strerror}") from exc


class _ReadFailedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
