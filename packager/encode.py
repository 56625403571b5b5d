"""Encode one rung and hand its packets to a :class:`Segmenter` as they arrive.

A :class:`RungEncoder` receives the decoded source frames, resamples them to
its own rate, layout and sample format, encodes, and passes every packet to
its segmenter, which writes each segment as soon as it holds its frames, so
memory does not grow with the track.  The init segment is written last, when
the encoder has told us its final configuration (FLAC's STREAMINFO carries the
total sample count and MD5 only after flushing) and the exact presentation
duration is known.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.packet import Packet

from cadenza.manifests.model import Codec, Rendition
from cadenza.packager.errors import EncodeError
from cadenza.packager.segmenter import CODECS_STRING, RungPlan, Segmenter

__all__ = [
    "CODECS_STRING",
    "LAYOUTS",
    "PacketEncoder",
    "RungEncoder",
    "RungPlan",
    "encoder_delay_ticks",
    "open_codec",
]

LAYOUTS: Final = {1: "mono", 2: "stereo", 6: "5.1"}


def open_codec(plan: RungPlan) -> AudioCodecContext:
    layout = LAYOUTS[plan.channels]
    if plan.codec is Codec.AAC:
        ctx = av.CodecContext.create("aac", "w")
        ctx.format = "fltp"
        ctx.profile = "LC"
    elif plan.codec is Codec.OPUS:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.format = "flt"
        # Music, 20 ms frames; surround needs mapping family 1 (RFC 7845 5.1.1.2).
        ctx.options = {
            "application": "audio",
            "frame_duration": "20",
            "vbr": "on",
            **({"mapping_family": "1"} if plan.channels > 2 else {}),
        }
    else:
        ctx = av.CodecContext.create("flac", "w")
        ctx.format = "s32" if plan.bits_per_sample == 24 else "s16"
    assert isinstance(ctx, AudioCodecContext)
    ctx.sample_rate = plan.sample_rate_hz
    ctx.layout = layout
    ctx.time_base = Fraction(1, plan.sample_rate_hz)
    if plan.bitrate_bps is not None:
        ctx.bit_rate = plan.bitrate_bps
    try:
        ctx.open()
    except av.error.FFmpegError as exc:
        raise EncodeError(plan.rendition_id, f"encoder refused its settings: {exc}") from exc
    return ctx


def encoder_delay_ticks(codec: Codec, extradata: bytes, first_pts: int | None) -> int:
    """The encoder's priming: Opus's pre-skip from its OpusHead (RFC 7845 5.1), else
    how far before zero the first packet starts (FFmpeg's AAC: 1024 samples)."""
    if codec is Codec.OPUS and len(extradata) >= 12:
        return int.from_bytes(extradata[10:12], "little")
    if first_pts is not None and first_pts < 0:
        return -first_pts
    return 0


class PacketEncoder:
    """One rung's resampler and encoder: :meth:`encode` takes planar float source
    samples and returns the coded packets they complete (``None`` flushes).

    Shared by :class:`RungEncoder` (VOD) and the live ingest
    (:mod:`cadenza.packager.live`), so both encode with the same settings.
    """

    def __init__(self, plan: RungPlan, *, source_rate_hz: int, source_layout: str) -> None:
        self.plan = plan
        self._source_rate_hz = source_rate_hz
        self._source_layout = source_layout
        self._source_ticks = 0
        self.ctx = open_codec(plan)
        self._resampler = AudioResampler(
            format=self.ctx.format.name, layout=LAYOUTS[plan.channels], rate=plan.sample_rate_hz
        )
        self.input_ticks = 0  # resampled samples handed to the encoder

    def encode(self, samples: npt.NDArray[np.float32] | None) -> list[Packet[Any]]:
        """Encode one block of planar float source samples, shape (channels, n),
        or flush everything with ``None``.

        The block is shared with other rungs' threads and only read: each rung
        wraps it in its own frame, because PyAV's resamplers rebase the frames
        they are given in place.
        """
        frame: AudioFrame | None = None
        if samples is not None:
            frame = AudioFrame.from_ndarray(samples, format="fltp", layout=self._source_layout)
            frame.sample_rate = self._source_rate_hz
            frame.time_base = Fraction(1, self._source_rate_hz)
            frame.pts = self._source_ticks
            self._source_ticks += samples.shape[1]
        packets: list[Packet[Any]] = []
        try:
            for out in self._resampler.resample(frame):
                self.input_ticks += out.samples
                packets += self.ctx.encode(out)
            if frame is None:
                packets += self.ctx.encode(None)
        except av.error.FFmpegError as exc:
            raise EncodeError(self.plan.rendition_id, f"encoder failed: {exc}") from exc
        return packets


class RungEncoder:
    """Feed source frames in with :meth:`feed`, then call :meth:`finish` once."""

    def __init__(
        self, plan: RungPlan, folder: Path, *, source_rate_hz: int, source_layout: str
    ) -> None:
        self.plan = plan
        self.folder = folder
        self._encoder = PacketEncoder(
            plan, source_rate_hz=source_rate_hz, source_layout=source_layout
        )
        self._ctx = self._encoder.ctx
        # AAC and Opus packets always decode to a whole frame, whatever FFmpeg's
        # trimmed packet duration says; the edit list removes the padding.
        self._fixed_frame_ticks: int | None = (
            None if plan.codec is Codec.FLAC else self._ctx.frame_size
        )
        self._segmenter = Segmenter(plan, folder, frame_ticks=self._ctx.frame_size or 4096)
        self._first_pts: int | None = None

    @property
    def _input_ticks(self) -> int:
        return self._encoder.input_ticks

    # -- encoding ---------------------------------------------------------
    def feed(self, samples: npt.NDArray[np.float32] | None) -> None:
        """Encode one block of planar float source samples, shape (channels, n),
        or flush everything with ``None`` (:meth:`PacketEncoder.encode`)."""
        for packet in self._encoder.encode(samples):
            self._take(packet)

    def _take(self, packet: Packet[Any]) -> None:
        if self._first_pts is None:
            self._first_pts = packet.pts if packet.pts is not None else 0
        duration = self._fixed_frame_ticks or packet.duration
        if not duration:
            return  # FLAC's flush emits an empty packet carrying only side data
        self._segmenter.add(bytes(packet), duration)

    # -- finishing --------------------------------------------------------
    def finish(self) -> Rendition:
        """Flush, write the init segment (or the single file), describe the rendition."""
        self.feed(None)
        extradata = bytes(self._ctx.extradata or b"")
        return self._segmenter.finish(
            codec_private=extradata,
            encoder_delay_ticks=encoder_delay_ticks(self.plan.codec, extradata, self._first_pts),
            duration_ticks=self._input_ticks,
        )

    def abort(self) -> None:
        self._segmenter.abort()
