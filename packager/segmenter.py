"""Cut one rendition's coded packets into CMAF segments as they arrive.

A :class:`Segmenter` takes coded audio packets, from an encoder
(:class:`cadenza.packager.encode.RungEncoder`) or straight from a demuxer
(:mod:`cadenza.packager.remux`), and writes each segment as soon as it holds its
frames, so memory does not grow with the track.  The init segment is written
by :meth:`Segmenter.finish`, once the codec configuration (FLAC's STREAMINFO
carries the total sample count and MD5 only after the encoder flushes), the
priming and the exact presentation duration are known.

This module needs neither numpy nor PyAV, so the segment-only command stays small.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Final

from cadenza.manifests.model import (
    INIT_NAME,
    SINGLE_FILE_NAME,
    ByteRange,
    Codec,
    EncryptionScheme,
    Rendition,
    Segment,
    SegmentLayout,
    expand_template,
    tagged_name,
)
from cadenza.manifests.model import MEDIA_TEMPLATE as _MEDIA_TEMPLATE
from cadenza.packager import mp4
from cadenza.packager.encrypt import (
    RenditionKey,
    encrypt_samples_cbcs,
    encrypt_segment_aes128,
    segment_iv,
)
from cadenza.packager.errors import EncodeError
from cadenza.packager.mp4_protect import Protection

CODECS_STRING: Final = {Codec.AAC: "mp4a.40.2", Codec.OPUS: "opus", Codec.FLAC: "fLaC"}
DEFAULT_SEGMENT_DURATION: Final = Fraction(4)  # seconds


@dataclass(frozen=True, slots=True)
class RungPlan:
    """Everything a rung's encoder and segmenter need, resolved against the source."""

    rendition_id: str
    codec: Codec
    bitrate_bps: int | None
    sample_rate_hz: int
    channels: int
    bits_per_sample: int | None  # FLAC: 16 or 24
    segment_duration: Fraction  # target, seconds
    layout: SegmentLayout
    # The packaging's version tag in every file name (Rendition.name_tag); "" for none.
    name_tag: str = ""
    # Encryption, the last step of each segment (packager.encrypt); None: clear.
    key: RenditionKey | None = None

    @property
    def protection(self) -> Protection | None:
        """The init segment's cbcs declaration (``sinf``, ``pssh``), if cbcs."""
        key = self.key
        if key is None or key.scheme is not EncryptionScheme.CBCS or key.iv is None:
            return None
        return Protection(key.key_id, key.iv)

    @property
    def aes128_key(self) -> RenditionKey | None:
        key = self.key
        return key if key is not None and key.scheme is EncryptionScheme.AES_128 else None

    def file_name(self, name: str) -> str:
        """``name`` (init.mp4, media.mp4, the media template) with this plan's tag."""
        return tagged_name(name, self.name_tag)


def segment_frames(plan: RungPlan, frame_ticks: int) -> int:
    """Frames per segment: the target duration rounded to whole codec frames."""
    frames = round(plan.segment_duration * plan.sample_rate_hz / frame_ticks)
    return max(1, frames)


def fragment_track_config(plan: RungPlan) -> mp4.TrackConfig:
    """The track configuration a media segment is written with.  Fragment headers
    depend on neither the edit list nor the codec configuration: a provisional
    config will do (shared with just-in-time packaging, :mod:`cadenza.packager.jit`)."""
    return mp4.TrackConfig(
        codec=plan.codec,
        sample_rate_hz=plan.sample_rate_hz,
        channels=plan.channels,
        codec_private=b"",
        encoder_delay_ticks=0,
        duration_ticks=0,
        average_bitrate_bps=plan.bitrate_bps or 0,
        max_bitrate_bps=plan.bitrate_bps or 0,
        bits_per_sample=plan.bits_per_sample or 16,
        protection=plan.protection,
    )


class Segmenter:
    """Feed packets in with :meth:`add`, then call :meth:`finish` once.

    A segment is cut once it holds ``segment_frames(plan, frame_ticks)`` codec
    frames' worth of ticks, so rungs of one codec whose packets have the same
    durations cut at identical sample boundaries.  Segments start at decode
    time 0 and run on without gaps (``tfdt``); the edit list written by
    :meth:`finish` removes priming and padding.
    """

    def __init__(self, plan: RungPlan, folder: Path, *, frame_ticks: int) -> None:
        self.plan = plan
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self._segment_ticks = segment_frames(plan, frame_ticks) * frame_ticks
        self._pending: list[bytes] = []
        self._pending_durations: list[int] = []
        self._pending_ticks = 0
        self._segments: list[Segment] = []
        self._decode_time_ticks = 0
        self._single: BinaryIO | None = None
        if plan.layout is SegmentLayout.SINGLE:
            self._single = open(folder / (SINGLE_FILE_NAME + ".fragments"), "wb")  # noqa: SIM115

    def add(self, data: bytes, duration_ticks: int) -> None:
        """One coded frame (one CMAF sample) lasting ``duration_ticks``."""
        self._pending.append(data)
        self._pending_durations.append(duration_ticks)
        self._pending_ticks += duration_ticks
        if self._pending_ticks >= self._segment_ticks:
            self._emit_segment()

    def _track_config(
        self,
        *,
        codec_private: bytes,
        encoder_delay_ticks: int,
        duration_ticks: int,
        average_bitrate_bps: int,
        max_bitrate_bps: int,
    ) -> mp4.TrackConfig:
        return mp4.TrackConfig(
            codec=self.plan.codec,
            sample_rate_hz=self.plan.sample_rate_hz,
            channels=self.plan.channels,
            codec_private=codec_private,
            encoder_delay_ticks=encoder_delay_ticks,
            duration_ticks=duration_ticks,
            average_bitrate_bps=average_bitrate_bps,
            max_bitrate_bps=max_bitrate_bps,
            bits_per_sample=self.plan.bits_per_sample or 16,
            protection=self.plan.protection,
        )

    def _emit_segment(self) -> None:
        if not self._pending:
            return
        number = len(self._segments) + 1
        track = fragment_track_config(self.plan)
        samples = self._pending
        key = self.plan.key
        if key is not None and key.scheme is EncryptionScheme.CBCS and key.iv is not None:
            samples = encrypt_samples_cbcs(key.key, key.iv, samples)
        data = mp4.build_media_segment(
            track,
            number,
            self._decode_time_ticks,
            samples,
            self._pending_durations,
            styp=self._single is None,
        )
        aes128 = self.plan.aes128_key
        if aes128 is not None:  # RFC 8216 5.2: segment n has media sequence number n
            data = encrypt_segment_aes128(aes128.key, segment_iv(aes128, number), data)
        duration = self._pending_ticks
        if self._single is not None:
            self._single.write(data)
        else:
            name = expand_template(self.plan.file_name(_MEDIA_TEMPLATE), number)
            (self.folder / name).write_bytes(data)
        self._segments.append(Segment(number, self._decode_time_ticks, duration, len(data)))
        self._decode_time_ticks += duration
        self._pending = []
        self._pending_durations = []
        self._pending_ticks = 0

    def finish(
        self, *, codec_private: bytes, encoder_delay_ticks: int, duration_ticks: int
    ) -> Rendition:
        """Write the last segment and the init segment (or the single file), and
        describe the rendition.

        ``encoder_delay_ticks`` (priming) and ``duration_ticks`` (the
        presentation duration) become the edit list's ``media_time`` and
        ``segment_duration``.
        """
        self._emit_segment()
        if not self._segments:
            raise EncodeError(self.plan.rendition_id, "encoder produced no packets")
        delay = encoder_delay_ticks
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
        track = self._track_config(
            codec_private=codec_private,
            encoder_delay_ticks=delay,
            duration_ticks=duration_ticks,
            average_bitrate_bps=average_bps,
            max_bitrate_bps=peak_bps,
        )
        segments = tuple(self._segments)
        init_range = index_range = None
        if self._single is not None:
            segments, init_size, init_range, index_range = self._write_single_file(track)
        else:
            # Clear even under AES-128: the playlist maps it before its EXT-X-KEY.
            init = mp4.build_init_segment(track)
            (self.folder / self.plan.file_name(INIT_NAME)).write_bytes(init)
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
            decoder_config=mp4.decoder_config(track),
            name_tag=self.plan.name_tag,
            encryption=None if self.plan.key is None else self.plan.key.encryption,
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
        single = self.folder / self.plan.file_name(SINGLE_FILE_NAME)
        with open(single, "wb") as out, open(fragments_path, "rb") as src:
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
