"""What ``cadenza segment`` reads from a pre-encoded input besides its packets: the
MP4 edit list (priming and duration) and the codec headers (AudioSpecificConfig,
ADTS, the Opus TOC byte, FLAC STREAMINFO).  Byte parsing of what the file holds; no
PyAV."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

from cadenza.packager.errors import Mp4Error
from cadenza.packager.mp4read import Box, find_boxes, parse_elst

# MPEG-4 audio object types (ISO/IEC 14496-3 1.5.1.1)
AOT_LC: Final = 2
AOT_NAMES: Final = {
    1: "AAC Main",
    3: "AAC SSR",
    4: "AAC LTP",
    5: "HE-AAC (SBR)",
    29: "HE-AAC v2 (PS)",
    39: "ER AAC-ELD",
    42: "xHE-AAC (USAC)",
}
MAX_MOOV_BYTES: Final = 64 << 20


@dataclass(frozen=True, slots=True)
class Edit:
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


def mp4_edit(path: Path, stream_id: int, rate_hz: int) -> Edit | None:
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
    return Edit(round(Fraction(edit.media_time * rate_hz, media_scale)), duration)


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


def asc_object_type(asc: bytes) -> tuple[int, int]:
    """(audio object type, frame length) of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)."""
    bits = _Bits(asc)
    aot = bits.read(5)
    if aot == 31:
        aot = 32 + bits.read(6)
    if bits.read(4) == 15:  # samplingFrequencyIndex: escape to a 24-bit rate
        bits.read(24)
    bits.read(4)  # channelConfiguration
    frame_length = 1024
    if aot == AOT_LC and bits.read(1):  # GASpecificConfig frameLengthFlag
        frame_length = 960
    return aot, frame_length


def adts_header(data: bytes) -> tuple[int, bytes] | None:
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


def flac_streaminfo(extradata: bytes) -> bytes:
    info = extradata[8:] if extradata[:4] == b"fLaC" else extradata
    if len(info) < 34:
        raise ValueError(f"STREAMINFO needs 34 bytes, got {len(info)}")
    return info[:34]
