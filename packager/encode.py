"""Encode one rung and cut it into CMAF segments as packets arrive.

A :class:`RungEncoder` receives the decoded source frames, resamples them to
its own rate, layout and sample format, encodes, and writes each segment as
soon as it holds its frames, so memory does not grow with the track.  The init
segment is written last, when the encoder has told us its final configuration
(FLAC's STREAMINFO carries the total sample count and MD5 only after flushing)
and the exact presentation duration is known.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Final

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.packet import Packet

from manifests.model import (
    INIT_NAME,
    SINGLE_FILE_NAME,
    ByteRange,
    Codec,
    Rendition,
    Segment,
    SegmentLayout,
    expand_template,
)
from manifests.model import MEDIA_TEMPLATE as _MEDIA_TEMPLATE
from packager import mp4
from packager.errors import EncodeError

CODECS_STRING: Final = {Codec.AAC: "mp4a.40.2", Codec.OPUS: "opus", Codec.FLAC: "fLaC"}
_LAYOUTS: Final = {1: "mono", 2: "stereo", 6: "5.1"}


@dataclass(frozen=True, slots=True)
class RungPlan:
    """Everything a rung's encoder needs, resolved against the source."""

    rendition_id: str
    codec: Codec
    bitrate_bps: int | None
    sample_rate_hz: int
    channels: int
    bits_per_sample: int | None  # FLAC: 16 or 24
    segment_duration: Fraction  # target, seconds
    layout: SegmentLayout


def _open_codec(plan: RungPlan) -> AudioCodecContext:
    layout = _LAYOUTS[plan.channels]
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


def _segment_frames(plan: RungPlan, frame_ticks: int) -> int:
    """Frames per segment: the target duration rounded to whole codec frames."""
    frames = round(plan.segment_duration * plan.sample_rate_hz / frame_ticks)
    return max(1, frames)


class RungEncoder:
    """Feed source frames in with :meth:`feed`, then call :meth:`finish` once."""

    def __init__(
        self, plan: RungPlan, folder: Path, *, source_rate_hz: int, source_layout: str
    ) -> None:
        self.plan = plan
        self._source_rate_hz = source_rate_hz
        self._source_layout = source_layout
        self._source_ticks = 0
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self._ctx = _open_codec(plan)
        self._resampler = AudioResampler(
            format=self._ctx.format.name, layout=_LAYOUTS[plan.channels], rate=plan.sample_rate_hz
        )
        # AAC and Opus packets always decode to a whole frame, whatever FFmpeg's
        # trimmed packet duration says; the edit list removes the padding.
        self._fixed_frame_ticks: int | None = (
            None if plan.codec is Codec.FLAC else self._ctx.frame_size
        )
        frame_ticks = self._ctx.frame_size or 4096
        self._frames_per_segment = _segment_frames(plan, frame_ticks)
        self._input_ticks = 0
        self._first_pts: int | None = None
        self._pending: list[bytes] = []
        self._pending_durations: list[int] = []
        self._segments: list[Segment] = []
        self._decode_time_ticks = 0
        self._single: BinaryIO | None = None
        if plan.layout is SegmentLayout.SINGLE:
            self._single = open(folder / (SINGLE_FILE_NAME + ".fragments"), "wb")  # noqa: SIM115
        self._track: mp4.TrackConfig | None = None

    # -- encoding ---------------------------------------------------------
    def feed(self, samples: npt.NDArray[np.float32] | None) -> None:
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
        try:
            outs = self._resampler.resample(frame)
            for out in outs:
                self._input_ticks += out.samples
                for packet in self._ctx.encode(out):
                    self._take(packet)
            if frame is None:
                for packet in self._ctx.encode(None):
                    self._take(packet)
        except av.error.FFmpegError as exc:
            raise EncodeError(self.plan.rendition_id, f"encoder failed: {exc}") from exc

    def _take(self, packet: Packet[Any]) -> None:
        if self._first_pts is None:
            self._first_pts = packet.pts if packet.pts is not None else 0
        duration = self._fixed_frame_ticks or packet.duration
        if not duration:
            return  # FLAC's flush emits an empty packet carrying only side data
        self._pending.append(bytes(packet))
        self._pending_durations.append(duration)
        if len(self._pending) >= self._frames_per_segment:
            self._emit_segment()

    def _track_config(self, duration_ticks: int) -> mp4.TrackConfig:
        extradata = bytes(self._ctx.extradata or b"")
        return mp4.TrackConfig(
            codec=self.plan.codec,
            sample_rate_hz=self.plan.sample_rate_hz,
            channels=self.plan.channels,
            codec_private=extradata,
            encoder_delay_ticks=self._encoder_delay_ticks(extradata),
            duration_ticks=duration_ticks,
            average_bitrate_bps=self.plan.bitrate_bps or 0,
            max_bitrate_bps=self.plan.bitrate_bps or 0,
            bits_per_sample=self.plan.bits_per_sample or 16,
        )

    def _encoder_delay_ticks(self, extradata: bytes) -> int:
        if self.plan.codec is Codec.OPUS and len(extradata) >= 12:
            return int.from_bytes(extradata[10:12], "little")  # OpusHead pre-skip (RFC 7845)
        if self._first_pts is not None and self._first_pts < 0:
            return -self._first_pts
        return 0

    def _emit_segment(self) -> None:
        if not self._pending:
            return
        number = len(self._segments) + 1
        # Fragment headers do not depend on the edit list: a provisional track config will do.
        track = self._track_config(duration_ticks=0)
        data = mp4.build_media_segment(
            track,
            number,
            self._decode_time_ticks,
            self._pending,
            self._pending_durations,
            styp=self._single is None,
        )
        duration = sum(self._pending_durations)
        if self._single is not None:
            self._single.write(data)
        else:
            (self.folder / expand_template(_MEDIA_TEMPLATE, number)).write_bytes(data)
        self._segments.append(Segment(number, self._decode_time_ticks, duration, len(data)))
        self._decode_time_ticks += duration
        self._pending = []
        self._pending_durations = []

    # -- finishing --------------------------------------------------------
    def finish(self) -> Rendition:
        """Flush, write the init segment (or the single file), describe the rendition."""
        self.feed(None)
        self._emit_segment()
        if not self._segments:
            raise EncodeError(self.plan.rendition_id, "encoder produced no packets")
        duration_ticks = self._input_ticks
        delay = self._encoder_delay_ticks(bytes(self._ctx.extradata or b""))
        media_ticks = self._decode_time_ticks
        if media_ticks < delay + duration_ticks:
            raise EncodeError(
                self.plan.rendition_id,
                f"encoded {media_ticks} samples, fewer than priming {delay} + source "
                f"{duration_ticks}",
            )
        total_media_bytes = sum(s.size_bytes for s in self._segments)
        rate = self.plan.sample_rate_hz
        average_bps = round(total_media_bytes * 8 * rate / media_ticks)
        peak_bps = max(round(s.size_bytes * 8 * rate / s.duration_ticks) for s in self._segments)
        track = dataclasses.replace(
            self._track_config(duration_ticks),
            average_bitrate_bps=average_bps,
            max_bitrate_bps=peak_bps,
        )
        segments = tuple(self._segments)
        init_range = index_range = None
        if self._single is not None:
            segments, init_size, init_range, index_range = self._write_single_file(track)
        else:
            init = mp4.build_init_segment(track)
            (self.folder / INIT_NAME).write_bytes(init)
            init_size = len(init)
        return Rendition(
            id=self.plan.rendition_id,
            codec=self.plan.codec,
            codecs=CODECS_STRING[self.plan.codec],
            sample_rate_hz=rate,
            channels=self.plan.channels,
            timescale=rate,
            average_bitrate_bps=average_bps,
            peak_bitrate_bps=peak_bps,
            encoder_delay_ticks=delay,
            duration_ticks=duration_ticks,
            init_size_bytes=init_size,
            segments=segments,
            target_bitrate_bps=self.plan.bitrate_bps,
            bits_per_sample=self.plan.bits_per_sample,
            layout=self.plan.layout,
            init_range=init_range,
            index_range=index_range,
        )

    def _write_single_file(
        self, track: mp4.TrackConfig
    ) -> tuple[tuple[Segment, ...], int, ByteRange, ByteRange]:
        """init + sidx + every fragment, in one file addressed by byte ranges."""
        assert self._single is not None
        self._single.close()
        fragments_path = Path(self._single.name)
        references = [(s.size_bytes, s.duration_ticks) for s in self._segments]
        header, init_range, index_range = mp4.build_single_file_header(track, references)
        with open(self.folder / SINGLE_FILE_NAME, "wb") as out, open(fragments_path, "rb") as src:
            out.write(header)
            shutil.copyfileobj(src, out, 1 << 20)
        os.unlink(fragments_path)
        offset = len(header)
        segments = []
        for s in self._segments:
            segments.append(
                Segment(
                    s.number,
                    s.start_ticks,
                    s.duration_ticks,
                    s.size_bytes,
                    ByteRange(offset, s.size_bytes),
                )
            )
            offset += s.size_bytes
        return tuple(segments), init_range.length_bytes, init_range, index_range

    def abort(self) -> None:
        if self._single is not None and not self._single.closed:
            self._single.close()
