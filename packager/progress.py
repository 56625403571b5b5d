"""Progress of a batch on the terminal, down to the seconds decoded within each track.

A track reports how far its decoder has got through a :class:`DecodeTracker`, which
``package_track`` feeds once per decoded block; the tracker hands a
:class:`DecodeProgress` to this process's sink at most every :data:`REPORT_EVERY_S`.
Where the track runs decides the sink: in a batch's child process it is the pipe to
the parent (:mod:`cadenza.packager.processes`), in a one-process batch it is the
:class:`Progress` display itself. On a Dask cluster no sink is installed, and
progress is per track only.

:class:`Progress` draws one status line on a terminal (finished tracks scroll above
it; the line shows every track in flight with its seconds decoded, of how many, and
an ETA), and plain lines when the output is not a terminal (a log file, CI): one per
finished track, and one per track in flight every :data:`PLAIN_EVERY_S`.

How much is shown follows the ``logging`` level of ``cadenza package -q``/``-v``:
``WARNING`` shows failures and warnings only, ``INFO`` (the default) adds progress
and each finished track, ``DEBUG`` adds each track's CPU time and audio length.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:  # track.py imports this module to report from its decode loop
    from cadenza.packager.decode import SourceProbe
    from cadenza.packager.track import TrackResult

REPORT_EVERY_S: Final = 0.5  # at most this often per track from a worker to the display
PLAIN_EVERY_S: Final = 10.0  # one plain line per track in flight this often, off a terminal
BAR_WIDTH: Final = 20
ETA_AFTER_S: Final = 2.0  # no ETA before a track has run this long


@dataclass(frozen=True, slots=True)
class DecodeProgress:
    """How far one track's decoding has got; small and picklable, it crosses the pipe
    from a worker process to the batch."""

    track_id: str
    decoded_s: float
    duration_s: float | None  # as the container declares it; None when it does not
    elapsed_s: float  # wall time since the track started

    @property
    def fraction(self) -> float | None:
        if not self.duration_s:
            return None
        return min(1.0, self.decoded_s / self.duration_s)

    @property
    def eta_s(self) -> float | None:
        """Wall seconds left at the rate so far; None without a length, and for the first
        :data:`ETA_AFTER_S` (the encoders' queues fill at once, so the first rate is wrong)."""
        if not self.duration_s or self.decoded_s <= 0 or self.elapsed_s < ETA_AFTER_S:
            return None
        rate = self.decoded_s / self.elapsed_s  # seconds of audio per wall second
        return max(0.0, self.duration_s - self.decoded_s) / rate

    def describe(self) -> str:
        done = f"{self.track_id} {_clock(self.decoded_s)}"
        if self.duration_s:
            done += f"/{_clock(self.duration_s)}"
            fraction = self.fraction or 0.0
            done += f" ({fraction:.0%})"
        eta = self.eta_s
        return done + (f" ETA {_clock(eta)}" if eta is not None else "")


Sink = Callable[[DecodeProgress], None]
_sink: Sink | None = None  # this process's: set by whoever runs the track


@contextlib.contextmanager
def reporting_to(sink: Sink) -> Iterator[None]:
    """Send the decode progress of tracks packaged in this process to ``sink``."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


class DecodeTracker:
    """Turns decoded sample counts into :class:`DecodeProgress` for the sink, throttled."""

    def __init__(
        self,
        track_id: str,
        probe: SourceProbe,
        sink: Sink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.track_id = track_id
        self.rate_hz = probe.sample_rate_hz
        declared = probe.declared_duration_ticks
        self.duration_s = declared / self.rate_hz if declared else None
        self.sink = sink
        self.clock = clock
        self.started = clock()
        self.last_sent: float | None = None

    @classmethod
    def start(cls, track_id: str, probe: SourceProbe) -> DecodeTracker | None:
        """A tracker when this process has a sink, else None (nothing to do per block)."""
        return None if _sink is None else cls(track_id, probe, _sink)

    def advance(self, decoded_ticks: int) -> None:
        now = self.clock()
        if self.last_sent is not None and now - self.last_sent < REPORT_EVERY_S:
            return
        self.last_sent = now
        self.sink(
            DecodeProgress(
                self.track_id, decoded_ticks / self.rate_hz, self.duration_s, now - self.started
            )
        )


def _clock(seconds: float) -> str:
    """``75.4`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """The batch on the terminal: a redrawn status line on a TTY, plain lines otherwise."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.total = total
        self.width = width  # of the terminal; None: ask it each time (it can be resized)
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self.level = level
        self.clock = clock
        self.in_flight: dict[str, DecodeProgress] = {}
        self.last_plain: dict[str, float] = {}
        self.status_shown = False

    def update(self, result: TrackResult) -> None:
        """One track finished (packaged, skipped or failed)."""
        self.done += 1
        self.in_flight.pop(result.track_id, None)
        self.last_plain.pop(result.track_id, None)
        why = f" ({result.reason})" if result.reason else ""
        detail = {
            "packaged": f"-> {result.output} ({result.wall_s:.1f} s){why}",
            "skipped": why.strip() or "(already complete)",
            "failed": f"FAILED: {result.error}",
        }.get(result.status, f"-> {result.output}")
        loud = result.status == "failed" or bool(result.warnings)
        if self.level > logging.INFO and not loud:
            return
        line = f"[{self.done}/{self.total}] {result.status} {result.input} {detail}"
        if self.level <= logging.DEBUG and result.status == "packaged":
            audio = f"{result.duration_s:.1f} s" if result.duration_s is not None else "?"
            line += f"\n    audio {audio}, CPU {result.cpu_s:.1f} s"
        for warning in result.warnings:
            line += f"\n    warning: {warning}"
        self._print(line)

    def decoding(self, progress: DecodeProgress) -> None:
        """A track in flight reports how far it has decoded."""
        if self.level > logging.INFO:
            return
        self.in_flight[progress.track_id] = progress
        if self.tty:
            self._draw_status()
            return
        now = self.clock()
        last = self.last_plain.get(progress.track_id)
        if last is None or now - last >= PLAIN_EVERY_S:
            self.last_plain[progress.track_id] = now
            self.stream.write(f"    {progress.describe()}\n")
            self.stream.flush()

    def finish(self) -> None:
        """End the status line, if one is showing."""
        if self.tty and self.status_shown:
            self.stream.write("\n")
            self.stream.flush()
            self.status_shown = False

    def _print(self, line: str) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{line}\n")
            self._draw_status()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _draw_status(self) -> None:
        filled = BAR_WIDTH * self.done // max(1, self.total)
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total}"
        for progress in self.in_flight.values():
            line += f" | {progress.describe()}"
        width = (self.width or shutil.get_terminal_size().columns) - 1
        if len(line) > width:
            line = line[: max(0, width - 1)] + "…"
        self.stream.write(f"\r\033[K{line}")
        self.stream.flush()
        self.status_shown = self.done < self.total or bool(self.in_flight)
        if not self.status_shown:
            self.stream.write("\n")
