"""Live inputs for the end-to-end tests: a 48 kHz stereo 16-bit WAV stream written into a
FIFO at 1x wall clock, from a thread, as a capture device delivers it.

Every sample is made from the wall-clock instant it stands for (its capture time): the
feeder writes each 20 ms chunk once the wall clock has passed its last sample, so no
sample is written before it was "captured", nor more than a chunk after.  Two signals:

- :func:`tone`, a steady 440 Hz tone;
- :func:`pips`, the wall clock written into the audio: a 120 ms tone pip starts at every
  wall-clock instant that is a multiple of :data:`PIP_PERIOD_S` (seconds since the epoch),
  and its pitch says which multiple modulo :data:`PIP_CODES_HZ`'s length.  A player's
  page that hears a pip start at wall time W knows it was captured at the latest multiple
  of the period at or before W with that code: glass-to-glass latency up to
  ``PIP_PERIOD_S * len(PIP_CODES_HZ)`` (16 s) reads unambiguously.  The pitches (750 Hz to
  1.5 kHz, 250 Hz apart) and level (-6 dBFS) are well inside what AAC and Opus keep even
  at 32 kb/s, and 120 ms spans several codec frames; the 2 ms raised-cosine ramps keep the
  onset sharp without a click's spread spectrum.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

RATE_HZ: Final = 48000
CHUNK_TICKS: Final = RATE_HZ // 50  # 20 ms: a capture device's buffer
# A write that blocked this long (the reader was busy): the time lost is skipped, no burst.
LATE_S: Final = 0.1

PIP_PERIOD_S: Final = 4
PIP_CODES_HZ: Final = (750.0, 1000.0, 1250.0, 1500.0)
PIP_S: Final = 0.12
PIP_RAMP_S: Final = 0.002
PIP_LEVEL: Final = 0.5
TONE_HZ: Final = 440.0
TONE_LEVEL: Final = 0.3

Times = npt.NDArray[np.float64]
Signal = Callable[[Times], npt.NDArray[np.float64]]


def tone(wall_s: Times) -> npt.NDArray[np.float64]:
    """A 440 Hz tone (a whole number of cycles per second: continuous over any gap)."""
    return TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * np.mod(wall_s, 1.0))


def pips(wall_s: Times) -> npt.NDArray[np.float64]:
    """A pip at every multiple of :data:`PIP_PERIOD_S`; silence between them."""
    index = np.floor(wall_s / PIP_PERIOD_S)
    since_s = wall_s - index * PIP_PERIOD_S
    codes = np.asarray(PIP_CODES_HZ)[np.mod(index, len(PIP_CODES_HZ)).astype(np.int64)]
    ramp = np.clip(np.minimum(since_s, PIP_S - since_s) / PIP_RAMP_S, 0.0, 1.0)
    envelope = 0.5 - 0.5 * np.cos(np.pi * ramp)
    pip = PIP_LEVEL * envelope * np.sin(2 * np.pi * codes * since_s)
    return np.where(since_s < PIP_S, pip, 0.0)


def pip_captured_at(heard_wall_s: float, code: int) -> float:
    """The capture instant of a pip with ``code`` heard starting at ``heard_wall_s``: the
    latest multiple of the period at or before it whose code that is."""
    index = int(heard_wall_s // PIP_PERIOD_S)
    index -= (index - code) % len(PIP_CODES_HZ)
    return float(index * PIP_PERIOD_S)


class FifoFeeder:
    """Writes ``signal`` of each sample's capture time into a FIFO at 1x wall clock;
    :meth:`stall` stops writing for a while, as a live input that stops delivering (the
    stalled time has no samples: the signal stays on the wall clock)."""

    def __init__(self, fifo: Path, signal: Signal = tone) -> None:
        self.fifo = fifo
        self.signal = signal
        self._stop = threading.Event()
        self._resume_at = 0.0  # monotonic: no writing before this
        self._lock = threading.Lock()
        self.chunks_skipped = 0  # chunks lost to writes that blocked
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
        wall_offset_s = time.time() - time.monotonic()
        with contextlib.suppress(BrokenPipeError), self.fifo.open("wb") as sink:
            write_wav_header(sink)
            anchor_s = time.monotonic()  # the capture instant of sample `anchor_tick`
            anchor_tick = written = 0
            while not self._stop.is_set():
                with self._lock:
                    resume_at = self._resume_at
                now = time.monotonic()
                if now < resume_at:
                    self._stop.wait(resume_at - now)
                    anchor_s, anchor_tick = time.monotonic(), written  # nothing captured
                    continue
                start_s = anchor_s + (written - anchor_tick) / RATE_HZ
                wait_s = start_s + CHUNK_TICKS / RATE_HZ - now
                if wait_s > 0:
                    self._stop.wait(wait_s)
                    continue
                if wait_s < -LATE_S:
                    self.chunks_skipped += 1
                    start_s = now - CHUNK_TICKS / RATE_HZ
                    anchor_s, anchor_tick = start_s, written
                ticks = np.arange(CHUNK_TICKS, dtype=np.float64) / RATE_HZ
                level = self.signal(wall_offset_s + start_s + ticks)
                pcm = np.round(np.clip(level, -1.0, 1.0) * 32767).astype("<i2")
                sink.write(np.repeat(pcm[:, None], 2, axis=1).tobytes())
                sink.flush()
                written += CHUNK_TICKS


def write_wav_header(sink: BinaryIO) -> None:
    """A 48 kHz stereo 16-bit WAV header whose sizes say "as long as it takes"."""
    unknown = 0xFFFFFFFF
    sink.write(b"RIFF" + struct.pack("<I", unknown) + b"WAVE")
    sink.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, RATE_HZ, RATE_HZ * 4, 4, 16))
    sink.write(b"data" + struct.pack("<I", unknown))
