"""A source file for just-in-time packaging: probed cheaply, then read a window at a time.

The batch packager decodes a source once, counting samples from zero
(:class:`cadenza.packager.decode.Decoder`).  Here a source must say its exact length
before anything is encoded, and give any window of its samples, identical to what
that decode yields:

- **FLAC** (native ``.flac``) and **PCM WAV** are *seekable*: their frames carry exact
  sample positions (FLAC frame headers, WAV byte offsets).  The probe reads the header's
  length (STREAMINFO's sample count, the ``data`` chunk's size) and confirms it by
  seeking to the end and decoding the last frame, so a truncated file is refused at once
  rather than after its first segments were served; it never decodes the file whole.
  A window is read by seeking to a frame at or before it and discarding what precedes it.
- **Anything else** (MP3, AAC, Opus/Vorbis in Ogg, FLAC in another container...) holds
  no exact sample count: its decoder drops priming by the container's word and an MP3's
  frames have no sample positions.  The probe decodes it once to count, which costs a
  fraction of encoding its ladder, and a window is read by decoding from the start and
  discarding what precedes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from cadenza.packager.decode import (
    DECODE_FORMAT,
    DURATION_TOLERANCE_MS,
    MIN_DURATION_MS,
    Block,
    Decoder,
    SourceProbe,
)
from cadenza.packager.errors import InputError
from cadenza.packager.media_input import open_media

# How far before the end the probe seeks to find the last frame: more than the
# longest FLAC block (65535 samples).
_END_PROBE_TICKS: Final = 1 << 17
# How far back a refused seek retries.
_SEEK_RETREAT_TICKS: Final = 1 << 16
_SEEKABLE: Final = {("flac", "flac")}  # (container format, codec); plus PCM in WAV


@dataclass(frozen=True, slots=True)
class JitSource:
    """A probed source.  ``total_ticks`` is the exact number of samples the batch
    :class:`~cadenza.packager.decode.Decoder` decodes; ``seekable``: a window can be
    read without decoding what precedes it."""

    path: Path
    probe: SourceProbe
    total_ticks: int
    seekable: bool


def _is_seekable(format_name: str, codec_name: str) -> bool:
    if (format_name, codec_name) in _SEEKABLE:
        return True
    return format_name == "wav" and codec_name.startswith("pcm_")


def _check_length(path: Path, probe: SourceProbe, total: int) -> None:
    """The refusals the batch decoder makes for a track too short to package."""
    rate = probe.sample_rate_hz
    if total == 0:
        raise InputError(path, "no audio samples could be decoded")
    if total < rate * MIN_DURATION_MS // 1000:
        raise InputError(
            path,
            f"only {total} samples ({total * 1000 / rate:.1f} ms) could be decoded; "
            f"a track must last at least {MIN_DURATION_MS} ms",
        )


def probe_source(path: Path) -> JitSource:
    """Probe ``path``: its stream, its exact length, and whether it can be read by seeking.

    Raises :class:`InputError` for what the batch packager refuses (no audio, corrupt,
    unsupported rate, too short), and, unlike it, for a seekable file cut short of the
    length its header declares: the batch packager would package what decodes and warn,
    but a track served segment by segment must know its end before its first segment.
    """
    with Decoder(path) as decoder:
        probe = decoder.probe
        container = decoder.container
        declared = probe.declared_duration_ticks
        end: int | None = None
        if _is_seekable(container.format.name, probe.codec_name) and declared:
            end = _decoded_end(decoder, max(0, declared - _END_PROBE_TICKS))
    if end is not None:
        assert declared is not None
        rate = probe.sample_rate_hz
        if declared - end > rate * DURATION_TOLERANCE_MS // 1000:
            raise InputError(
                path,
                f"truncated: its last frame ends at {end / rate:.3f} s of the "
                f"{declared / rate:.3f} s its header declares; just-in-time packaging "
                "refuses it (`cadenza package` packages what decodes)",
            )
        _check_length(path, probe, end)
        return JitSource(path, probe, end, True)
    with Decoder(path) as decoder:  # decode once to count, exactly as the batch packager
        for _ in decoder.frames():
            pass
        return JitSource(path, decoder.probe, decoder.report.decoded_ticks, False)


def _decoded_end(decoder: Decoder, from_tick: int) -> int | None:
    """The sample position where the last decodable frame ends, found by seeking to
    ``from_tick`` and decoding to the end; None when the frames carry no positions."""
    container = decoder.container
    stream = container.streams.audio[0]
    rate = decoder.probe.sample_rate_hz
    end: int | None = None
    try:
        for frame in _frames_from(container, stream, from_tick, rate):
            if frame.pts is None:
                return None
            end = _tick_of(frame, stream.time_base, rate) + frame.samples
    except av.error.FFmpegError as exc:
        raise InputError(decoder.path, f"corrupt: {exc.strerror} near its end") from exc
    return end


def _tick_of(frame: AudioFrame, time_base: Fraction | None, rate: int) -> int:
    assert frame.pts is not None
    base = time_base if time_base is not None else Fraction(1, rate)
    return round(frame.pts * base * rate)


def _frames_from(
    container: InputContainer, stream: AudioStream, tick: int, rate: int
) -> Iterator[AudioFrame]:
    """Decoded frames from a frame at or before ``tick``.  FFmpeg's FLAC demuxer can
    refuse a seek close to the end of a file without a seek table: then it seeks
    further back, and at last decodes from where it is: the start of a fresh file."""
    base = stream.time_base if stream.time_base is not None else Fraction(1, rate)
    for target in (tick, tick - _SEEK_RETREAT_TICKS, tick - 4 * _SEEK_RETREAT_TICKS):
        if target <= 0:
            break
        try:
            container.seek(int(Fraction(target, rate) / base), stream=stream, backward=True)
            break
        except av.error.FFmpegError:
            continue
    for packet in container.demux(stream):
        yield from packet.decode()


def read_window(source: JitSource, start_tick: int, end_tick: int) -> Block:
    """The source's decoded samples ``[start_tick, end_tick)`` (clipped to the track),
    planar float32, exactly as the batch decode gives them."""
    end_tick = min(end_tick, source.total_ticks)
    start_tick = max(0, min(start_tick, end_tick))
    channels = source.probe.channels
    if end_tick == start_tick:
        return np.zeros((channels, 0), dtype=np.float32)
    if source.seekable:
        block = _read_seeking(source, start_tick, end_tick)
        if block is not None:
            return block
    parts: list[Block] = []
    with Decoder(source.path) as decoder:
        at = 0
        for frame in decoder.frames():
            n = frame.samples
            if at + n > start_tick:
                data = np.asarray(frame.to_ndarray(), dtype=np.float32)
                parts.append(data[:, max(0, start_tick - at) : end_tick - at])
            at += n
            if at >= end_tick:
                break
    return _joined(parts, channels, end_tick - start_tick, source.path)


def _read_seeking(source: JitSource, start_tick: int, end_tick: int) -> Block | None:
    """The window read by seeking; None if the seek landed after it (then decode from 0)."""
    probe = source.probe
    rate = probe.sample_rate_hz
    to_float = AudioResampler(format=DECODE_FORMAT, layout=probe.layout_name, rate=rate)
    parts: list[Block] = []
    at: int | None = None
    with open_media(source.path) as container:
        stream = container.streams.audio[0]
        try:
            for frame in _frames_from(container, stream, start_tick, rate):
                if at is None:
                    if frame.pts is None or _tick_of(frame, stream.time_base, rate) > start_tick:
                        return None
                    at = _tick_of(frame, stream.time_base, rate)
                for out in to_float.resample(frame):
                    at = _take(parts, out, at, start_tick, end_tick)
                if at >= end_tick:
                    break
            else:
                for out in to_float.resample(None):
                    at = _take(parts, out, at if at is not None else 0, start_tick, end_tick)
        except av.error.FFmpegError as exc:
            raise InputError(source.path, f"decoding failed: {exc.strerror}") from exc
    return _joined(parts, probe.channels, end_tick - start_tick, source.path)


def _take(parts: list[Block], frame: AudioFrame, at: int, start_tick: int, end_tick: int) -> int:
    n = frame.samples
    if at + n > start_tick and at < end_tick:
        data = np.asarray(frame.to_ndarray(), dtype=np.float32)
        parts.append(data[:, max(0, start_tick - at) : end_tick - at])
    return at + n


def _joined(parts: list[Block], channels: int, ticks: int, path: Path) -> Block:
    block = np.concatenate(parts, axis=1) if parts else np.zeros((channels, 0), np.float32)
    if block.shape[1] != ticks:
        raise InputError(path, f"decoded {block.shape[1]} of the {ticks} samples asked for")
    return np.ascontiguousarray(block, dtype=np.float32)
