"""Shared pieces of the live ingest tests: a fake clock, a scripted input, readers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from cadenza.manifests.live import LivePresentation, LiveRendition
from cadenza.packager.live.grid import LIVE_RATE_HZ
from cadenza.packager.live.source import EndOfInput, FormatChange, Item

EPOCH_S = 1_700_000_000.0
STALL = "stall"


class FakeClock:
    """Wall-clock seconds that move only when told."""

    def __init__(self, start_s: float = EPOCH_S) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def tone(seconds: float, channels: int = 2, start_ticks: int = 0) -> np.ndarray:
    ticks = round(seconds * LIVE_RATE_HZ)
    t = (np.arange(ticks) + start_ticks) / LIVE_RATE_HZ
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


class ScriptedSource:
    """A live input made of blocks (delivered at 1x: the clock moves by each block's
    duration), :data:`STALL` entries (a read that times out: the clock moves by the
    timeout), format changes and an end."""

    def __init__(
        self,
        script: Sequence[Any],
        clock: FakeClock,
        layout: str = "stereo",
        on_read: Any = None,
    ) -> None:
        self._script: Iterator[Any] = iter(script)
        self._clock = clock
        self._layout = layout
        self._on_read = on_read
        self.closed = False

    @property
    def layout(self) -> str:
        return self._layout

    def read(self, timeout_s: float | None) -> Item | None:
        if self._on_read is not None:
            self._on_read()
        item = next(self._script, EndOfInput("script over"))
        if isinstance(item, str) and item == STALL:
            assert timeout_s is not None, "a stall needs a read timeout"
            self._clock.advance(timeout_s)
            return None
        if isinstance(item, Instant):
            item = item.block
        elif isinstance(item, np.ndarray):
            self._clock.advance(item.shape[1] / LIVE_RATE_HZ)
        if isinstance(item, np.ndarray):
            item.flags.writeable = False
        assert isinstance(item, np.ndarray | FormatChange | EndOfInput)
        return item

    def close(self) -> None:
        self.closed = True


class Instant:
    """A block delivered without the clock moving: part of a burst (a server that
    hands over seconds of audio at once on connect)."""

    def __init__(self, block: np.ndarray) -> None:
        self.block = block


def blocks(seconds: float, block_s: float = 1024 / LIVE_RATE_HZ) -> list[np.ndarray]:
    """A tone cut into blocks of about a frame, continuous across them."""
    out = []
    ticks = round(seconds * LIVE_RATE_HZ)
    step = round(block_s * LIVE_RATE_HZ)
    for start in range(0, ticks, step):
        n = min(step, ticks - start)
        out.append(np.ascontiguousarray(tone(n / LIVE_RATE_HZ, start_ticks=start)))
    return out


def stream_bytes(folder: Path, rendition: LiveRendition) -> bytes:
    """init + every complete segment (gaps hold the stall's silence), as a DASH
    player appends them."""
    data = [(folder / rendition.id / rendition.init_name).read_bytes()]
    data += [
        (folder / rendition.id / s.name).read_bytes() for s in rendition.segments if s.complete
    ]
    return b"".join(data)


def decode(data: bytes) -> np.ndarray:
    """Every sample FFmpeg decodes, planar float, shape (channels, n)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        with av.open(handle.name) as container:
            stream = container.streams.audio[0]
            frames = [f.to_ndarray() for f in container.decode(stream)]
    return np.concatenate(frames, axis=1).astype(np.float32)


def named_files(presentation: LivePresentation) -> list[Path]:
    """Every file the model names (relative to the track folder)."""
    names = []
    for r in presentation.renditions:
        names.append(Path(r.id) / r.init_name)
        for s in r.segments:
            names += [Path(r.id) / p.name(s.number) for p in s.parts]
            if s.complete:
                names.append(Path(r.id) / s.name)
    return names
