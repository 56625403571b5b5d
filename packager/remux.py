"""Segment already-encoded rungs into CMAF, HLS and DASH without decoding.

``cadenza segment`` takes one file per rung (AAC-LC in MP4/M4A or ADTS, Opus
in Ogg or MP4, FLAC native or in MP4), reads its coded packets with PyAV's
demuxer and hands them, byte for byte, to the same :class:`Segmenter` that
``cadenza package`` feeds from its encoders.  Nothing is decoded or encoded.

- Priming: AAC from the input MP4's edit list (its ``media_time``), else the
  standard 1024 samples; Opus from the OpusHead pre-skip; FLAC has none.
- Duration: the MP4 edit list's ``segment_duration`` when there is one, else
  what the demuxer delivers minus the priming (exact for Ogg Opus, whose last
  granule position trims the padding, and for FLAC; an ADTS stream cannot say
  how much padding it carries).
- Alignment: rungs of one codec must share a sample rate and a frame duration,
  and are cut into the same number of frames per segment; the finished
  timelines are compared and a rung that does not line up is refused.

The output folder is built and committed exactly like ``cadenza package``'s
(:mod:`cadenza.packager.output`, :mod:`cadenza.packager.publish`).  This module imports neither
numpy nor the encoders, so the command stays small and quick to start.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import av
import av.error
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.packet import Packet

from cadenza.manifests.model import Codec, Presentation, Rendition, SegmentLayout
from cadenza.packager.errors import InputError, Mp4Error, OutputError
from cadenza.packager.mp4read import Box, find_boxes, parse_elst
from cadenza.packager.output import commit_track, is_complete, new_temp_dir, oserror_reason
from cadenza.packager.publish import write_manifests
from cadenza.packager.segmenter import DEFAULT_SEGMENT_DURATION, RungPlan, Segmenter

# FFmpeg codec names (descriptor names, not decoder names) -> cadenza codecs.
_CODECS: Final = {"aac": Codec.AAC, "opus": Codec.OPUS, "flac": Codec.FLAC}
AAC_PRIMING_TICKS: Final = 1024  # what AAC encoders commonly insert when nothing says
OPUS_RATE_HZ: Final = 48000  # Opus always decodes at 48 kHz (RFC 7845 4)
# MPEG-4 audio object types (ISO/IEC 14496-3 1.5.1.1)
_AOT_LC: Final = 2
_AOT_NAMES: Final = {
    1: "AAC Main",
    3: "AAC SSR",
    4: "AAC LTP",
    5: "HE-AAC (SBR)",
    29: "HE-AAC v2 (PS)",
    39: "ER AAC-ELD",
    42: "xHE-AAC (USAC)",
}
MAX_MOOV_BYTES: Final = 64 << 20
# A measured bit rate within 3 % of one of these is taken to be that nominal rate.
_NOMINAL_KBPS: Final = (
    8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320, 384, 448,
    512,
)  # fmt: skip
_NOMINAL_TOLERANCE: Final = 0.03


@dataclass(frozen=True, slots=True)
class RemuxOptions:
    segment_duration: Fraction = DEFAULT_SEGMENT_DURATION  # seconds
    single_file: bool = False
    force: bool = False


@dataclass(slots=True)
class RemuxResult:
    track_id: str
    status: str  # "packaged" | "skipped"
    output: Path
    presentation: Presentation | None = None
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Edit:
    """The input MP4's single edit, converted to samples."""

    media_time_ticks: int
    duration_ticks: int | None  # None: the edit runs to the end (duration 0 in fragmented files)


# -- reading the input's boxes -------------------------------------------------


def _read_moov(path: Path) -> bytes | None:
    """The top-level ``moov`` box, read by seeking past everything else."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        offset = 0
        while offset + 8 <= end:
            handle.seek(offset)
            size, kind = struct.unpack(">I4s", handle.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", handle.read(8))
            elif size == 0:
                size = end - offset
            if size < 8 or offset + size > end:
                return None
            if kind == b"moov":
                if size > MAX_MOOV_BYTES:
                    return None
                handle.seek(offset)
                return handle.read(size)
            offset += size
    return None


def _timescale(box: Box) -> int:
    """``timescale`` of an ``mvhd`` or ``mdhd`` (ISO/IEC 14496-12 8.2.2, 8.4.2)."""
    at = 20 if box.payload[:1] == b"\x01" else 12
    if len(box.payload) < at + 4:
        raise Mp4Error(box.type, "truncated")
    (value,) = struct.unpack_from(">I", box.payload, at)
    if value == 0:
        raise Mp4Error(box.type, "timescale is 0")
    return int(value)


def _track_id(box: Box) -> int:
    at = 20 if box.payload[:1] == b"\x01" else 12
    if len(box.payload) < at + 4:
        raise Mp4Error("tkhd", "truncated")
    return int(struct.unpack_from(">I", box.payload, at)[0])


def _mp4_edit(path: Path, stream_id: int, rate_hz: int) -> _Edit | None:
    """The audio track's edit list, if it has exactly one non-empty edit."""
    moov = _read_moov(path)
    if moov is None:
        return None
    movie_scale = _timescale(find_boxes(moov, "moov/mvhd")[0])
    sound = []
    for trak in find_boxes(moov, "moov/trak"):
        handlers = find_boxes(trak.payload, "mdia/hdlr")
        if handlers and handlers[0].payload[8:12] == b"soun":
            sound.append(trak)
    if not sound:
        return None
    trak = next(
        (t for t in sound if _track_id(find_boxes(t.payload, "tkhd")[0]) == stream_id), sound[0]
    )
    elsts = find_boxes(trak.payload, "edts/elst")
    if not elsts:
        return None
    edits = [e for e in parse_elst(elsts[0]).entries if e.media_time != -1]
    if len(edits) != 1:
        return None
    media_scale = _timescale(find_boxes(trak.payload, "mdia/mdhd")[0])
    edit = edits[0]
    duration = None
    if edit.segment_duration:
        duration = round(Fraction(edit.segment_duration * rate_hz, movie_scale))
    return _Edit(round(Fraction(edit.media_time * rate_hz, media_scale)), duration)


# -- codec headers -----------------------------------------------------------------


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def read(self, count: int) -> int:
        if count > self._left:
            raise ValueError("truncated")
        self._left -= count
        return (self._value >> self._left) & ((1 << count) - 1)


def _asc_object_type(asc: bytes) -> tuple[int, int]:
    """(audio object type, frame length) of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)."""
    bits = _Bits(asc)
    aot = bits.read(5)
    if aot == 31:
        aot = 32 + bits.read(6)
    if bits.read(4) == 15:  # samplingFrequencyIndex: escape to a 24-bit rate
        bits.read(24)
    bits.read(4)  # channelConfiguration
    frame_length = 1024
    if aot == _AOT_LC and bits.read(1):  # GASpecificConfig frameLengthFlag
        frame_length = 960
    return aot, frame_length


def _adts_header(data: bytes) -> tuple[int, bytes] | None:
    """(header length, AudioSpecificConfig) of an ADTS frame (ISO/IEC 14496-3 1.A.2), or
    None when ``data`` does not start with one."""
    if len(data) < 7 or data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        return None
    protection_absent = data[1] & 1
    profile = data[2] >> 6
    rate_index = (data[2] >> 2) & 0xF
    channel_config = ((data[2] & 1) << 2) | (data[3] >> 6)
    raw_blocks = data[6] & 0x3
    if raw_blocks:
        raise ValueError("ADTS frames holding several raw data blocks are not supported")
    asc = ((profile + 1) << 11) | (rate_index << 7) | (channel_config << 3)
    return (7 if protection_absent else 9), asc.to_bytes(2, "big")


_OPUS_SILK: Final = (480, 960, 1920, 2880)
_OPUS_CELT: Final = (120, 240, 480, 960)


def opus_packet_ticks(data: bytes) -> int:
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 3.1).  A
    multistream packet's streams all last as long as its first."""
    if not data:
        raise ValueError("empty Opus packet")
    toc = data[0]
    config = toc >> 3
    if config < 12:
        frame = _OPUS_SILK[config % 4]
    elif config < 16:
        frame = (480, 960)[config % 2]
    else:
        frame = _OPUS_CELT[config % 4]
    code = toc & 0x3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(data) < 2:
            raise ValueError("Opus code-3 packet without a frame count")
        frames = data[1] & 0x3F
    return frame * frames


def _flac_streaminfo(extradata: bytes) -> bytes:
    info = extradata[8:] if extradata[:4] == b"fLaC" else extradata
    if len(info) < 34:
        raise ValueError(f"STREAMINFO needs 34 bytes, got {len(info)}")
    return info[:34]


# -- one input ------------------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    packets: int = 0
    payload_bytes: int = 0
    media_ticks: int = 0  # what the segments hold: whole frames
    demuxed_ticks: int = 0  # what the demuxer says the packets last (trimmed at the end)


class RungInput:
    """One pre-encoded rung: opened, its audio stream checked, its first packet read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container = _open(path)
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
        self.edit: _Edit | None = None
        if "mp4" in self._container.format.name.split(","):
            try:
                self.edit = _mp4_edit(self.path, self._stream.id, self.sample_rate_hz)
            except (Mp4Error, IndexError, struct.error) as exc:
                raise self._fail(f"unreadable MP4 boxes: {exc}") from exc
            except OSError as exc:
                raise self._fail(f"cannot read: {exc.strerror or exc}") from exc

    def _probe_aac(self, extradata: bytes, profile: str | None) -> None:
        first = bytes(self._first) if self._first is not None else b""
        asc = extradata
        if not asc:
            try:
                adts = _adts_header(first)
            except ValueError as exc:
                raise self._fail(str(exc)) from exc
            if adts is None:
                raise self._fail("AAC stream has neither an AudioSpecificConfig nor ADTS headers")
            self._adts_header, asc = adts
        try:
            aot, self.frame_ticks = _asc_object_type(asc)
        except ValueError as exc:
            raise self._fail("AAC AudioSpecificConfig is truncated") from exc
        # FFmpeg reports explicitly signalled HE-AAC (object type 5 or 29) as "LC": the
        # AudioSpecificConfig tells; "HE-AAC" is what it says of backward-compatible SBR.
        kind = None
        if aot != _AOT_LC:
            kind = _AOT_NAMES.get(aot, f"audio object type {aot}")
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
            info = _flac_streaminfo(extradata)
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

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> RungInput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open(path: Path) -> InputContainer:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a media file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"cannot stat: {exc.strerror}") from exc
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.InvalidDataError as exc:
        raise InputError(path, "not a media file FFmpeg can read (invalid data)") from exc
    except av.error.FFmpegError as exc:
        raise InputError(path, f"FFmpeg cannot open it: {exc.strerror}") from exc


# -- the track ---------------------------------------------------------------------


def _check_compatible(rungs: Sequence[RungInput]) -> None:
    """Rungs of one codec must cut at identical sample boundaries: same rate, same frames."""
    first: dict[Codec, RungInput] = {}
    for rung in rungs:
        ref = first.setdefault(rung.codec, rung)
        if rung.sample_rate_hz != ref.sample_rate_hz:
            raise InputError(
                rung.path,
                f"{rung.codec} at {rung.sample_rate_hz} Hz, but {ref.path.name} is at "
                f"{ref.sample_rate_hz} Hz: the rungs of one codec must share a sample rate so "
                "their segments align",
            )
        if rung.frame_ticks != ref.frame_ticks:
            raise InputError(
                rung.path,
                f"{rung.codec} frames of {rung.frame_ticks} samples, but {ref.path.name} has "
                f"{ref.frame_ticks}: the rungs of one codec must share a frame size so their "
                "segments align",
            )


def _check_aligned(rungs: Sequence[RungInput], renditions: Sequence[Rendition]) -> None:
    first: dict[Codec, tuple[RungInput, Rendition]] = {}
    for rung, rendition in zip(rungs, renditions, strict=True):
        ref_rung, ref = first.setdefault(rendition.codec, (rung, rendition))
        ours = [(s.start_ticks, s.duration_ticks) for s in rendition.segments]
        theirs = [(s.start_ticks, s.duration_ticks) for s in ref.segments]
        if ours != theirs:
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                min(len(ours), len(theirs)),
            )
            raise InputError(
                rung.path,
                f"its segments do not line up with {ref_rung.path.name}'s from segment {at + 1} "
                f"({len(ours)} segments against {len(theirs)}): the rungs of one codec must "
                "hold the same frames",
            )


def _stream_bitrate(rung: RungInput, rendition: Rendition) -> int:
    """The stream's bit rate as the container declares it, else measured over the payload."""
    return rung.declared_bitrate_bps or round(
        rung.stats.payload_bytes * 8 * rendition.timescale / rendition.duration_ticks
    )


def _nominal(bps: int) -> int | None:
    for kbps in _NOMINAL_KBPS:
        if abs(bps - kbps * 1000) <= _NOMINAL_TOLERANCE * kbps * 1000:
            return kbps * 1000
    return None


def nominal_bitrates(codecs: Sequence[Codec], stream_bps: Sequence[int]) -> list[int | None]:
    """Each lossy rung's nominal bit rate (None for lossless ones).

    Encoders miss their target by a little, so a rate within 3 % of a customary one
    (64, 128, 256 kb/s...) is taken to be it; when two rungs of a codec would take the
    same one, the closer keeps it and the other keeps its own rate in whole kb/s
    (FFmpeg's AAC encoder asked for 320 kb/s may deliver 261).
    """
    pairs = list(zip(codecs, stream_bps, strict=True))
    snapped = [None if c.lossless else _nominal(bps) for c, bps in pairs]
    takers: dict[tuple[Codec, int], list[int]] = {}
    for index, (codec, value) in enumerate(zip(codecs, snapped, strict=True)):
        if value is not None:
            takers.setdefault((codec, value), []).append(index)
    for (_codec, value), indices in takers.items():
        keep = min(indices, key=lambda i: abs(stream_bps[i] - value))
        for index in indices:
            if index != keep:
                snapped[index] = None
    return [
        None if codec.lossless else snapped[index] or round(bps / 1000) * 1000
        for index, (codec, bps) in enumerate(pairs)
    ]


def rendition_ids(codecs: Sequence[Codec], nominal_bps: Sequence[int | None]) -> list[str]:
    """``aac-128k``, ``opus-64k``, ``flac``: codec and nominal kb/s, made unique with a suffix."""
    ids: list[str] = []
    for codec, bps in zip(codecs, nominal_bps, strict=True):
        base = str(codec) if bps is None else f"{codec}-{bps // 1000}k"
        name, n = base, 1
        while name in ids:
            n += 1
            name = f"{base}-{n}"
        ids.append(name)
    return ids


def _segment_rung(rung: RungInput, plan: RungPlan, folder: Path) -> Rendition:
    segmenter = Segmenter(plan, folder, frame_ticks=rung.frame_ticks)
    try:
        for data, ticks in rung.packets():
            segmenter.add(data, ticks)
        priming, duration = rung.timing()
        return segmenter.finish(
            codec_private=rung.codec_private, encoder_delay_ticks=priming, duration_ticks=duration
        )
    finally:
        segmenter.abort()


def _presentation(
    track_id: str,
    rungs: Sequence[RungInput],
    renditions: Sequence[Rendition],
    segment_duration: Fraction,
) -> Presentation:
    """Timescale of the first rung; duration of the longest rung whose duration is exact
    (edit list, Ogg granule, FLAC), else of the longest rung: padding is no content."""
    timescale = renditions[0].timescale
    exact = [r for g, r in zip(rungs, renditions, strict=True) if g.exact_duration]
    duration = max(-(-r.duration_ticks * timescale // r.timescale) for r in exact or renditions)
    return Presentation(
        track_id=track_id,
        timescale=timescale,
        duration_ticks=duration,
        renditions=tuple(renditions),
        target_segment_duration_ticks=int(segment_duration * timescale),
    )


def remux_track(
    track_id: str, inputs: Sequence[Path], out_root: Path, options: RemuxOptions
) -> RemuxResult:
    """Segment ``inputs`` (one file per rung, in ladder order) into ``out_root/<track_id>/``.

    Raises :class:`~cadenza.packager.errors.PackagerError` (an :class:`InputError` naming the
    file, or an :class:`OutputError`); nothing is left behind on failure.
    """
    started = time.perf_counter()
    final_dir = out_root / track_id
    result = RemuxResult(track_id=track_id, status="skipped", output=final_dir)
    if not options.force and is_complete(final_dir):
        return result
    if not inputs:
        raise InputError(out_root, "no rung files given")
    layout = SegmentLayout.SINGLE if options.single_file else SegmentLayout.SEPARATE
    rungs: list[RungInput] = []
    work_dir: Path | None = None
    try:
        for path in inputs:
            rungs.append(RungInput(path))
        _check_compatible(rungs)
        work_dir = new_temp_dir(out_root, track_id)
        renditions = []
        for index, rung in enumerate(rungs):
            plan = RungPlan(
                rendition_id=f"rung-{index + 1}",
                codec=rung.codec,
                bitrate_bps=None,
                sample_rate_hz=rung.sample_rate_hz,
                channels=rung.channels,
                bits_per_sample=rung.bits_per_sample,
                segment_duration=options.segment_duration,
                layout=layout,
            )
            renditions.append(_segment_rung(rung, plan, work_dir / plan.rendition_id))
            rung.close()
        _check_aligned(rungs, renditions)
        codecs = [r.codec for r in rungs]
        targets = nominal_bitrates(
            codecs, [_stream_bitrate(g, r) for g, r in zip(rungs, renditions, strict=True)]
        )
        named = []
        for rendition, rendition_id, target in zip(
            renditions, rendition_ids(codecs, targets), targets, strict=True
        ):
            os.rename(work_dir / rendition.id, work_dir / rendition_id)
            named.append(dataclasses.replace(rendition, id=rendition_id, target_bitrate_bps=target))
        presentation = _presentation(track_id, rungs, named, options.segment_duration)
        write_manifests(work_dir, presentation)
        commit_track(work_dir, final_dir)
        work_dir = None
    except OSError as exc:
        raise OutputError(exc.filename or out_root, oserror_reason(exc)) from exc
    finally:
        for rung in rungs:
            rung.close()
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
    result.status = "packaged"
    result.presentation = presentation
    result.wall_s = time.perf_counter() - started
    return result
