"""Open and decode one input, once, into normalised planar float frames.

This is the boundary with FFmpeg: every ``av.error`` is mapped to an
:class:`InputError` that names the file and the reason here, and nothing above
this module sees PyAV's exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from cadenza.manifests.ladder import MAX_SOURCE_RATE_HZ, MIN_SOURCE_RATE_HZ
from cadenza.packager.errors import InputError
from cadenza.packager.media_input import MediaReader, open_media, wav_declared_ticks
from cadenza.packager.tags import read_tags

Block = npt.NDArray[np.float32]  # planar decoded samples, shape (channels, n)


def coalesce(frames: Iterable[AudioFrame], min_ticks: int) -> Iterator[Block]:
    """Decoded frames joined into blocks of at least ``min_ticks`` samples (the last
    may be shorter): every consumer call costs the same Python overhead whatever
    its size, and a FLAC or MP3 frame is only 1152 to 4608 samples."""
    parts: list[npt.NDArray[np.float32]] = []
    ticks = 0
    for frame in frames:
        parts.append(np.asarray(frame.to_ndarray(), dtype=np.float32))
        ticks += frame.samples
        if ticks >= min_ticks:
            yield _join(parts)
            parts, ticks = [], 0
    if parts:
        yield _join(parts)


def _join(parts: list[npt.NDArray[np.float32]]) -> Block:
    block: Block = np.asarray(
        parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1), dtype=np.float32
    )
    block.flags.writeable = False
    return block


# A damaged file often yields a run of undecodable packets; past this many in a
# row we stop and package what decoded, reporting it as truncated.
MAX_CONSECUTIVE_DECODE_ERRORS: Final = 16
# Shorter than this is a fragment, not a track: a resampler's filter delay can
# swallow it whole, leaving an encoder with nothing to encode.
MIN_DURATION_MS: Final = 10
# Containers round their declared durations: a shortfall up to this is not damage.
DURATION_TOLERANCE_MS: Final = 100
DECODE_FORMAT: Final = "fltp"


@dataclass(frozen=True, slots=True)
class SourceProbe:
    path: Path
    codec_name: str
    sample_rate_hz: int
    channels: int
    layout_name: str
    channel_names: tuple[str, ...]
    bits_per_sample: int | None
    declared_duration_ticks: int | None  # in sample_rate_hz, from the container, if it says
    # Cleaned tags (cadenza.manifests.metadata): (key, value) pairs.
    tags: tuple[tuple[str, str], ...] = ()
    # A lossy source's own bitrate (MP3, AAC, Opus...), when the stream states one.
    lossy_bitrate_bps: int | None = None


@dataclass(slots=True)
class DecodeReport:
    decoded_ticks: int = 0
    skipped_packets: int = 0
    warnings: list[str] = field(default_factory=list)


def _bits_per_sample(stream: AudioStream) -> int | None:
    ctx = stream.codec_context
    raw = getattr(ctx, "bits_per_raw_sample", 0) or 0
    if isinstance(raw, int) and raw > 0:
        return raw
    fmt_bits = ctx.format.bits if ctx.format is not None else 0
    if ctx.format is not None and ctx.format.name.startswith(("flt", "dbl")):
        return None  # lossy decoders output float: no meaningful source bit depth
    return fmt_bits or None


def _lossy_bitrate_bps(stream: AudioStream) -> int | None:
    """The stream's bitrate when its codec is lossy (FFmpeg's codec descriptor says
    so), else None: a lossless or PCM source caps no rung."""
    ctx = stream.codec_context
    codec = ctx.codec
    if not codec.lossy or codec.lossless:
        return None
    bitrate = ctx.bit_rate or stream.bit_rate or 0
    return bitrate if isinstance(bitrate, int) and bitrate > 0 else None


class Decoder(MediaReader):
    """Context manager over one input file; iterate :meth:`frames` once.

    With ``strict``, damage that is otherwise a warning (a file cut short of the
    duration its header declares, undecodable packets) is an :class:`InputError`.
    """

    def __init__(self, path: Path, *, strict: bool = False) -> None:
        self.path = path
        self.strict = strict
        self.report = DecodeReport()
        self._container = open_media(path)
        self._stream = self._audio_stream()
        self.probe = self._probe()

    @property
    def container(self) -> InputContainer:
        """The open input (just-in-time packaging seeks in it: cadenza.packager.jit)."""
        return self._container

    def _audio_stream(self) -> AudioStream:
        streams = self._container.streams
        if not streams.audio:
            kinds: list[str] = sorted({str(s.type) for s in streams}) or ["none"]
            self._container.close()
            raise InputError(self.path, f"has no audio stream (streams found: {', '.join(kinds)})")
        stream = streams.audio[0]
        # PyAV gives no codec context for a stream whose codec FFmpeg does not know
        # (a mutated header can name one): refuse it by name, not with a crash.
        if stream.codec_context is None:
            self._container.close()
            raise InputError(self.path, "its audio stream's codec is one FFmpeg cannot decode")
        return stream

    def _probe(self) -> SourceProbe:
        stream = self._stream
        ctx = stream.codec_context
        rate = ctx.sample_rate or 0
        layout = ctx.layout
        channels = layout.nb_channels if layout is not None else 0
        if rate <= 0 or channels < 1:
            # FFmpeg opened it by its name or a lucky probe, but found no stream
            # header it could read: random bytes named .flac look like this.
            self._container.close()
            raise InputError(
                self.path,
                f"corrupt or unsupported: FFmpeg found no readable {ctx.name} stream header "
                "(it states no sample rate or no channels)",
            )
        if not MIN_SOURCE_RATE_HZ <= rate <= MAX_SOURCE_RATE_HZ:
            self._container.close()
            raise InputError(
                self.path,
                f"unsupported sample rate {rate} Hz (cadenza packages "
                f"{MIN_SOURCE_RATE_HZ}-{MAX_SOURCE_RATE_HZ} Hz)",
            )
        declared: int | None = None
        wav = wav_declared_ticks(self.path) if self._container.format.name == "wav" else None
        if wav is not None:
            frames, header_rate = wav
            declared = frames * rate // header_rate
        elif stream.duration is not None and stream.time_base is not None:
            declared = int(stream.duration * stream.time_base * rate)
        elif self._container.duration:
            declared = self._container.duration * rate // av.time_base
        return SourceProbe(
            path=self.path,
            codec_name=ctx.name,
            sample_rate_hz=rate,
            channels=channels,
            layout_name=layout.name,
            channel_names=tuple(c.name for c in layout.channels),
            bits_per_sample=_bits_per_sample(stream),
            declared_duration_ticks=declared,
            tags=read_tags(self._container, stream),
            lossy_bitrate_bps=_lossy_bitrate_bps(stream),
        )

    def frames(self) -> Iterator[AudioFrame]:
        """Decoded audio as ``fltp`` frames at the source rate and layout.

        Undecodable packets are skipped and counted; a long run of them ends
        decoding early, and the report says how much decoded.
        """
        probe = self.probe
        resampler = AudioResampler(
            format=DECODE_FORMAT, layout=probe.layout_name, rate=probe.sample_rate_hz
        )
        consecutive_errors = 0
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                self._note_stop(f"demuxing stopped: {exc.strerror}")
                break
            try:
                decoded = packet.decode()
                consecutive_errors = 0
            except av.error.FFmpegError as exc:
                self.report.skipped_packets += 1
                consecutive_errors += 1
                if consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    self._note_stop(f"decoding stopped after repeated errors: {exc.strerror}")
                    break
                continue
            for frame in decoded:
                for out in resampler.resample(frame):
                    yield self._stamp(out)
        for out in resampler.resample(None):
            yield self._stamp(out)
        self._check_complete()

    def _stamp(self, frame: AudioFrame) -> AudioFrame:
        """Timestamps count decoded samples from zero: gapless whatever the container said."""
        frame.pts = self.report.decoded_ticks
        frame.time_base = Fraction(1, self.probe.sample_rate_hz)
        self.report.decoded_ticks += frame.samples
        return frame

    def _note_stop(self, reason: str) -> None:
        seconds = self.report.decoded_ticks / self.probe.sample_rate_hz
        self.report.warnings.append(f"truncated: {reason} at {seconds:.3f} s")

    def _check_complete(self) -> None:
        declared = self.probe.declared_duration_ticks
        decoded = self.report.decoded_ticks
        rate = self.probe.sample_rate_hz
        if self.report.skipped_packets:
            self.report.warnings.append(
                f"{self.report.skipped_packets} undecodable packet(s) skipped"
            )
        if declared is not None and declared - decoded > rate * DURATION_TOLERANCE_MS // 1000:
            self.report.warnings.append(
                f"truncated: decoded {decoded / rate:.3f} s of the {declared / rate:.3f} s its "
                f"header declares (short by more than {DURATION_TOLERANCE_MS} ms)"
            )
        if decoded == 0:
            raise InputError(self.path, "no audio samples could be decoded")
        if decoded < rate * MIN_DURATION_MS // 1000:
            raise InputError(
                self.path,
                f"only {decoded} samples ({decoded * 1000 / rate:.1f} ms) could be decoded; "
                f"a track must last at least {MIN_DURATION_MS} ms",
            )
        if self.strict and self.report.warnings:
            raise InputError(self.path, f"damaged (--strict): {'; '.join(self.report.warnings)}")
