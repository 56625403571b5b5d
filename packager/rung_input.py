"""One pre-encoded rung for ``cadenza segment``: opened with PyAV, its audio stream
checked (AAC-LC, Opus or FLAC), its coded packets read byte for byte with their
durations, and its priming and duration worked out once every packet is read.

- Priming: AAC from the input MP4's edit list (its ``media_time``), else the standard
  1024 samples; Opus from the OpusHead pre-skip; FLAC has none.
- Duration: the MP4 edit list's ``segment_duration`` when there is one, else what the
  demuxer delivers minus the priming (exact for Ogg Opus, whose last granule position
  trims the padding, and for FLAC; an ADTS stream cannot say how much padding it carries).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av.error
from av.audio.stream import AudioStream
from av.packet import Packet

from cadenza.manifests.model import Codec
from cadenza.packager.errors import InputError, Mp4Error
from cadenza.packager.media_input import MediaReader, open_media
from cadenza.packager.rung_headers import (
    AOT_LC,
    AOT_NAMES,
    Edit,
    adts_header,
    asc_object_type,
    flac_streaminfo,
    mp4_edit,
    opus_packet_ticks,
)

# FFmpeg codec names (descriptor names, not decoder names) -> cadenza codecs.
_CODECS: Final = {"aac": Codec.AAC, "opus": Codec.OPUS, "flac": Codec.FLAC}
AAC_PRIMING_TICKS: Final = 1024  # what AAC encoders commonly insert when nothing says
OPUS_RATE_HZ: Final = 48000  # Opus always decodes at 48 kHz (RFC 7845 4)


@dataclass(slots=True)
class _Stats:
    packets: int = 0
    payload_bytes: int = 0
    media_ticks: int = 0  # what the segments hold: whole frames
    demuxed_ticks: int = 0  # what the demuxer says the packets last (trimmed at the end)


class RungInput(MediaReader):
    """One pre-encoded rung: opened, its audio stream checked, its first packet read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container = open_media(path)
        try:
            self._probe()
        except BaseException:
            self._container.close()
            raise
        self.stats = _Stats()
        self.exact_duration = False  # set by timing(): known exactly, not padded

    def _fail(self, reason: str) -> InputError:
        return InputError(self.path, reason)

    def _probe(self) -> None:
        streams = self._container.streams
        if not streams.audio:
            kinds = sorted({str(s.type) for s in streams}) or ["none"]
            raise self._fail(f"has no audio stream (streams found: {', '.join(kinds)})")
        self._stream: AudioStream = streams.audio[0]
        self._tick_scale: tuple[int, int] | None = None
        ctx = self._stream.codec_context
        if ctx is None:  # a codec FFmpeg does not know: PyAV gives no context
            raise self._fail("its audio stream's codec is one FFmpeg cannot decode")
        name = ctx.codec.canonical_name
        codec = _CODECS.get(name)
        if codec is None:
            raise self._fail(
                f"unsupported codec {name}: cadenza segment takes AAC-LC, Opus or FLAC as they "
                "are; re-encode it with cadenza package"
            )
        self.codec = codec
        self._demux = self._container.demux(self._stream)
        self._first = self._next_packet()
        if self._first is None:
            raise self._fail("has no audio packets")
        layout = ctx.layout
        self.channels = layout.nb_channels if layout is not None else 0
        if self.channels < 1:
            raise self._fail("audio stream declares no channels")
        self.sample_rate_hz = ctx.sample_rate or 0
        self.bits_per_sample: int | None = None
        self._adts_header = 0
        extradata = bytes(ctx.extradata or b"")
        if codec is Codec.AAC:
            self._probe_aac(extradata, ctx.profile)
        elif codec is Codec.OPUS:
            self._probe_opus(extradata)
        else:
            self._probe_flac(extradata)
        if self.sample_rate_hz <= 0:
            raise self._fail("audio stream declares no sample rate")
        declared = self._stream.bit_rate or ctx.bit_rate or 0
        self.declared_bitrate_bps: int | None = declared if declared > 0 else None
        self.edit: Edit | None = None
        if "mp4" in self._container.format.name.split(","):
            try:
                self.edit = mp4_edit(self.path, self._stream.id, self.sample_rate_hz)
            except (Mp4Error, IndexError, struct.error) as exc:
                raise self._fail(f"unreadable MP4 boxes: {exc}") from exc
            except OSError as exc:
                raise self._fail(f"cannot read: {exc.strerror or exc}") from exc

    def _probe_aac(self, extradata: bytes, profile: str | None) -> None:
        first = bytes(self._first) if self._first is not None else b""
        asc = extradata
        if not asc:
            try:
                adts = adts_header(first)
            except ValueError as exc:
                raise self._fail(str(exc)) from exc
            if adts is None:
                raise self._fail("AAC stream has neither an AudioSpecificConfig nor ADTS headers")
            self._adts_header, asc = adts
        try:
            aot, self.frame_ticks = asc_object_type(asc)
        except ValueError as exc:
            raise self._fail("AAC AudioSpecificConfig is truncated") from exc
        # FFmpeg reports explicitly signalled HE-AAC (object type 5 or 29) as "LC": the
        # AudioSpecificConfig tells; "HE-AAC" is what it says of backward-compatible SBR.
        kind = None
        if aot != AOT_LC:
            kind = AOT_NAMES.get(aot, f"audio object type {aot}")
        elif profile is not None and profile.startswith("HE"):
            kind = profile
        if kind is not None:
            raise self._fail(
                f"unsupported AAC profile {kind}: cadenza segment takes AAC-LC only "
                "(re-encode it with cadenza package)"
            )
        self.codec_private = asc
        self.priming_default = AAC_PRIMING_TICKS

    def _probe_opus(self, extradata: bytes) -> None:
        if len(extradata) < 19 or extradata[:8] != b"OpusHead":
            raise self._fail("Opus stream has no OpusHead header")
        self.codec_private = extradata
        self.sample_rate_hz = OPUS_RATE_HZ
        self.priming_default = int.from_bytes(extradata[10:12], "little")  # pre-skip
        assert self._first is not None
        self.frame_ticks = self._opus_ticks(bytes(self._first))

    def _probe_flac(self, extradata: bytes) -> None:
        try:
            info = flac_streaminfo(extradata)
        except ValueError as exc:
            raise self._fail(f"FLAC stream has no usable STREAMINFO: {exc}") from exc
        self.codec_private = info
        self.bits_per_sample = (((info[12] & 0x01) << 4) | (info[13] >> 4)) + 1
        self.priming_default = 0
        assert self._first is not None
        self.frame_ticks = self._demuxed_ticks(self._first)
        if self.frame_ticks <= 0:
            raise self._fail("FLAC frame without a duration")

    # -- packets ----------------------------------------------------------------------
    def _next_packet(self) -> Packet[Any] | None:
        while True:
            try:
                packet = next(self._demux)
            except StopIteration:
                return None
            except av.error.FFmpegError as exc:
                raise self._fail(f"demuxing failed: {exc.strerror}") from exc
            if packet.size:
                return packet

    def _demuxed_ticks(self, packet: Packet[Any]) -> int:
        """The packet's duration as the demuxer gives it, in samples (0 when unknown).
        Integer arithmetic: Fraction arithmetic per packet would cost more than the rest."""
        duration = packet.duration
        if not duration:
            return 0
        if self._tick_scale is None:
            time_base = self._stream.time_base or Fraction(1, self.sample_rate_hz)
            self._tick_scale = (time_base.numerator * self.sample_rate_hz, time_base.denominator)
        num, den = self._tick_scale
        return (duration * num + den // 2) // den

    def _opus_ticks(self, data: bytes) -> int:
        try:
            return opus_packet_ticks(data)
        except ValueError as exc:
            raise self._fail(f"malformed Opus packet: {exc}") from exc

    def packets(self) -> Iterator[tuple[bytes, int]]:
        """(coded frame, its ticks in the segments) in decode order, counted in :attr:`stats`."""
        stats = self.stats
        packet = self._first
        self._first = None
        codec = self.codec
        fixed = self.frame_ticks if codec is Codec.AAC else 0
        strip = self._adts_header
        while packet is not None:
            data = bytes(packet)
            if strip:
                if data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
                    raise self._fail(f"packet {stats.packets} lost its ADTS header")
                if data[6] & 0x3:
                    raise self._fail("ADTS frames holding several raw data blocks are unsupported")
                data = data[7 if data[1] & 1 else 9 :]
            if fixed:
                ticks = fixed  # an AAC frame always decodes whole; the edit list trims
            elif codec is Codec.OPUS:
                ticks = self._opus_ticks(data)
            else:
                ticks = self._demuxed_ticks(packet)
                if ticks <= 0:
                    raise self._fail(f"FLAC frame {stats.packets} has no duration")
            stats.packets += 1
            stats.payload_bytes += len(data)
            stats.media_ticks += ticks
            stats.demuxed_ticks += self._demuxed_ticks(packet) or ticks
            yield data, ticks
            packet = self._next_packet()

    def timing(self) -> tuple[int, int]:
        """(priming, presentation duration) in ticks, once every packet is read."""
        edit = self.edit
        priming = self.priming_default
        if edit is not None and self.codec is not Codec.OPUS:
            priming = edit.media_time_ticks
        if edit is not None and edit.duration_ticks is not None:
            duration = edit.duration_ticks
            self.exact_duration = True
        else:
            # Ogg's last granule position trims Opus padding; FLAC has none; an ADTS
            # stream or an MP4 without an edit list keeps the encoder's padding.
            duration = min(self.stats.demuxed_ticks, self.stats.media_ticks) - priming
            self.exact_duration = self.codec is not Codec.AAC
        if duration <= 0 or priming + duration > self.stats.media_ticks:
            raise self._fail(
                f"holds {self.stats.media_ticks} samples, fewer than its priming {priming} "
                f"plus its duration {duration}"
            )
        return priming, duration
