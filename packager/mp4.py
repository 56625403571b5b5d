"""CMAF fragmented-MP4 writer for audio (ISO/IEC 14496-12, ISO/IEC 23000-19).

cadenza writes its own boxes rather than using FFmpeg's mov muxer so that it
controls exactly what makes playback gapless and switchable:

- an edit list whose ``media_time`` skips the encoder's priming samples and whose
  ``segment_duration`` is the source's exact duration (14496-12 8.6.6);
- Opus pre-skip in ``dOps`` (Encapsulation of Opus in ISOBMFF, 4.3.2) and FLAC's
  STREAMINFO in ``dfLa`` (Encapsulation of FLAC in ISOBMFF, 3.3.2);
- one ``moof`` + ``mdat`` per segment, with ``tfdt`` carrying the decode time;
- a ``sidx`` for the single-file (DASH on-demand) layout (14496-12 8.16.3);
- one init segment for every rung of a switching group: only the bitrate
  fields of the sample entry differ between rungs, and
  :func:`with_group_bitrates` rewrites them alike.
- for an encrypted track (``TrackConfig.protection``), the CENC ``cbcs`` boxes of
  :mod:`cadenza.packager.mp4_protect`: ``enca`` + ``sinf`` and ``pssh`` in the init
  segment, ``saiz`` + ``saio`` + ``senc`` at the end of each ``traf``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cadenza.manifests.model import ByteRange, Codec
from cadenza.packager.errors import Mp4Error
from cadenza.packager.mp4_protect import (
    Protection,
    pssh_clearkey,
    sample_encryption_boxes,
    sinf,
)
from cadenza.packager.mp4read import Box, iter_boxes

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# sample_depends_on = 2: every audio sample is independently decodable (14496-12 8.8.3.1).
_SAMPLE_FLAGS_SYNC = 0x02000000


@dataclass(frozen=True, slots=True)
class TrackConfig:
    codec: Codec
    sample_rate_hz: int  # also the media and movie timescale: one tick = one sample
    channels: int
    codec_private: bytes
    encoder_delay_ticks: int
    duration_ticks: int
    average_bitrate_bps: int
    max_bitrate_bps: int
    bits_per_sample: int = 16
    track_id: int = 1
    language: str = "und"
    # CENC cbcs (packager.mp4_protect): ``enca`` + ``sinf`` + ``pssh``, ``senc`` per fragment.
    protection: Protection | None = None

    @property
    def timescale(self) -> int:
        return self.sample_rate_hz


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _ftyp() -> bytes:
    # CMAF track file: the 'cmfc' structural brand (ISO/IEC 23000-19 7.2) on an iso6 base.
    return _box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41dash")


def _language(code: str) -> int:
    letters = (code + "und")[:3].lower()
    value = 0
    for char in letters:
        value = (value << 5) | ((ord(char) - 0x60) & 0x1F)
    return value


def _descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor with its expandable size field (ISO/IEC 14496-1 8.3.3)."""
    size = len(payload)
    encoded = [size & 0x7F]
    size >>= 7
    while size:
        encoded.insert(0, 0x80 | (size & 0x7F))
        size >>= 7
    return bytes([tag, *encoded]) + payload


def _esds(track: TrackConfig) -> bytes:
    """ES descriptor for AAC (ISO/IEC 14496-14 5.6, 14496-1 7.2.6.5/6)."""
    decoder_specific = _descriptor(0x05, track.codec_private)
    decoder_config = _descriptor(
        0x04,
        struct.pack(
            ">BBBHII",
            0x40,  # objectTypeIndication: MPEG-4 Audio
            (0x05 << 2) | 1,  # streamType audio, upStream 0, reserved 1
            0,  # bufferSizeDB, high byte
            6144 * track.channels // 8,  # bufferSizeDB, low 16 bits
            track.max_bitrate_bps,
            track.average_bitrate_bps,
        )
        + decoder_specific,
    )
    sl_config = _descriptor(0x06, b"\x02")
    es = _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder_config + sl_config)
    return _full_box(b"esds", 0, 0, es)


def _dops(track: TrackConfig) -> bytes:
    """OpusSpecificBox from the little-endian OpusHead (RFC 7845 5.1) libopus gives."""
    head = track.codec_private
    if len(head) < 19 or head[:8] != b"OpusHead":
        raise Mp4Error("dOps", "codec_private is not an OpusHead")
    channels, pre_skip, rate, gain, family = struct.unpack_from("<BHIhB", head, 9)
    body = struct.pack(">BBHIhB", 0, channels, pre_skip, rate, gain, family)
    if family != 0:
        if len(head) < 21 + channels:
            raise Mp4Error("dOps", "OpusHead channel mapping table is truncated")
        body += head[19 : 21 + channels]
    return _box(b"dOps", body)


def _dfla(track: TrackConfig) -> bytes:
    """FLACSpecificBox holding STREAMINFO as the last metadata block."""
    info = track.codec_private
    if info[:4] == b"fLaC":
        info = info[8:42]
    if len(info) < 34:
        raise Mp4Error("dfLa", f"STREAMINFO needs 34 bytes, got {len(info)}")
    header = bytes([0x80, 0, 0, 34])  # last-metadata-block flag, type 0 (STREAMINFO), length
    return _full_box(b"dfLa", 0, 0, header + info[:34])


def _sample_entry(track: TrackConfig) -> bytes:
    if track.codec is Codec.AAC:
        kind, config, rate = b"mp4a", _esds(track), track.sample_rate_hz
    elif track.codec is Codec.OPUS:
        kind, config, rate = b"Opus", _dops(track), 48000
    else:
        kind, config, rate = b"fLaC", _dfla(track), track.sample_rate_hz
    # The 16.16 samplerate field cannot hold rates above 65535 Hz: write 0 and let the
    # decoder configuration (STREAMINFO) and the media timescale carry the rate.
    rate_field = rate << 16 if rate <= 0xFFFF else 0
    sample_size = track.bits_per_sample if track.codec is Codec.FLAC else 16
    audio = struct.pack(">6xH8xHHHHI", 1, track.channels, sample_size, 0, 0, rate_field)
    btrt = _box(b"btrt", struct.pack(">III", 0, track.max_bitrate_bps, track.average_bitrate_bps))
    if track.protection is not None:
        return _box(b"enca", audio, config, btrt, sinf(kind, track.protection))
    return _box(kind, audio, config, btrt)


def decoder_config(track: TrackConfig) -> bytes:
    """The codec configuration the sample entry carries, bitrates aside: what a decoder
    is set up from, and what the rungs of one switching group must share.  AAC: the
    AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1); Opus: the ``dOps`` payload (pre-skip,
    input sample rate, output gain, channel mapping); FLAC: STREAMINFO."""
    if track.codec is Codec.AAC:
        return track.codec_private
    if track.codec is Codec.OPUS:
        return _dops(track)[8:]
    return _dfla(track)[16:]


def build_init_segment(track: TrackConfig) -> bytes:
    """``ftyp`` + ``moov`` with the edit list that trims priming and padding."""
    timescale = track.timescale
    mvhd = _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, timescale, 0),
        struct.pack(">IH10x", 0x10000, 0x100),
        _MATRIX,
        bytes(24),
        struct.pack(">I", track.track_id + 1),
    )
    tkhd = _full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0),
        struct.pack(">8xhhH2x", 0, 1, 0x100),
        _MATRIX,
        struct.pack(">II", 0, 0),
    )
    big = track.duration_ticks > 0xFFFFFFFF or track.encoder_delay_ticks > 0x7FFFFFFF
    if big:
        entry = struct.pack(">Qqhh", track.duration_ticks, track.encoder_delay_ticks, 1, 0)
    else:
        entry = struct.pack(">Iihh", track.duration_ticks, track.encoder_delay_ticks, 1, 0)
    edts = _box(b"edts", _full_box(b"elst", 1 if big else 0, 0, struct.pack(">I", 1), entry))
    mdhd = _full_box(
        b"mdhd",
        0,
        0,
        struct.pack(">IIIIHH", 0, 0, timescale, 0, _language(track.language), 0),
    )
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"soun"), b"SoundHandler\x00")
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(track)),
        _full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = _box(b"minf", _full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0)), dinf, stbl)
    trak = _box(b"trak", tkhd, edts, _box(b"mdia", mdhd, hdlr, minf))
    trex = _full_box(b"trex", 0, 0, struct.pack(">IIIII", track.track_id, 1, 0, 0, 0))
    mvex = _box(b"mvex", trex)
    pssh = b"" if track.protection is None else pssh_clearkey([track.protection.key_id])
    return _ftyp() + _box(b"moov", mvhd, trak, mvex, pssh)


def build_styp() -> bytes:
    """The segment type box that starts a media segment (14496-12 8.16.2); a live
    segment's first part carries it (CMAF chunks after it do not)."""
    return _box(b"styp", b"msdh", struct.pack(">I", 0), b"msdhmsixcmfs")


def build_media_segment(
    track: TrackConfig,
    sequence_number: int,
    base_decode_time_ticks: int,
    samples: Sequence[bytes],
    durations_ticks: Sequence[int],
    *,
    styp: bool = True,
) -> bytes:
    """One CMAF fragment: [``styp``] + ``moof`` + ``mdat`` (14496-12 8.8)."""
    if len(samples) != len(durations_ticks) or not samples:
        raise Mp4Error("trun", "need one duration per sample and at least one sample")
    constant = len(set(durations_ticks)) == 1
    tfhd_flags = 0x020000 | 0x000020 | (0x000008 if constant else 0)
    tfhd = _full_box(
        b"tfhd",
        0,
        tfhd_flags,
        struct.pack(">I", track.track_id),
        struct.pack(">I", durations_ticks[0]) if constant else b"",
        struct.pack(">I", _SAMPLE_FLAGS_SYNC),
    )
    tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", base_decode_time_ticks))
    trun_flags = 0x000001 | 0x000200 | (0 if constant else 0x000100)
    if constant:
        rows = b"".join(struct.pack(">I", len(s)) for s in samples)
    else:
        rows = b"".join(
            struct.pack(">II", d, len(s)) for s, d in zip(samples, durations_ticks, strict=True)
        )

    def moof(data_offset: int, senc_entries_offset: int) -> bytes:
        trun = _full_box(
            b"trun", 0, trun_flags, struct.pack(">Ii", len(samples), data_offset), rows
        )
        mfhd = _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))
        protection = b""
        if track.protection is not None:  # senc last, its entries empty: they end the moof
            protection = sample_encryption_boxes(len(samples), senc_entries_offset)
        return _box(b"moof", mfhd, _box(b"traf", tfhd, tfdt, trun, protection))

    size = len(moof(0, 0))
    head = build_styp() if styp else b""
    return head + moof(size + 8, size) + _box(b"mdat", *samples)


def build_sidx(
    track: TrackConfig,
    references: Sequence[tuple[int, int]],
    *,
    earliest_presentation_time_ticks: int = 0,
    first_offset_bytes: int = 0,
) -> bytes:
    """Segment index: one reference per fragment, each starting with a SAP of type 1."""
    body = struct.pack(
        ">IIQQHH",
        track.track_id,
        track.timescale,
        earliest_presentation_time_ticks,
        first_offset_bytes,
        0,
        len(references),
    )
    for size, duration in references:
        if size >= 1 << 31:
            raise Mp4Error("sidx", f"fragment of {size} bytes is too large to reference")
        body += struct.pack(">III", size, duration, 0x90000000)
    return _full_box(b"sidx", 1, 0, body)


def build_single_file_header(
    track: TrackConfig, references: Sequence[tuple[int, int]]
) -> tuple[bytes, ByteRange, ByteRange]:
    """init + ``sidx`` for a file whose fragments follow the ``sidx`` directly."""
    init = build_init_segment(track)
    sidx = build_sidx(track, references)
    return init + sidx, ByteRange(0, len(init)), ByteRange(len(init), len(sidx))


# -- one init segment for a switching group ---------------------------------------

_SAMPLE_ENTRY_PATH = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd")
_STSD_HEADER_BYTES = 8  # version, flags, entry_count
_AUDIO_SAMPLE_ENTRY_BYTES = 28  # 14496-12 12.2.3: the fields before the child boxes


def _payload_start(box: Box) -> int:
    return box.offset + box.size - len(box.payload)


def _child(data: bytes, start: int, end: int, kind: bytes) -> Box | None:
    for box in iter_boxes(data, start, end):
        if box.type.encode("latin-1") == kind:
            return box
    return None


def _descriptor_body(data: bytes, at: int, tag: int) -> int:
    """Where the payload of the MPEG-4 descriptor ``tag`` at ``at`` starts
    (ISO/IEC 14496-1 8.3.3: a tag byte, then a size of 7 bits a byte)."""
    if at >= len(data) or data[at] != tag:
        raise Mp4Error("esds", f"expected descriptor tag {tag:#x} at offset {at}")
    at += 1
    for _ in range(4):
        if at >= len(data):
            break
        at += 1
        if not data[at - 1] & 0x80:
            return at
    raise Mp4Error("esds", f"descriptor {tag:#x} has a malformed size")


def _esds_bitrates_at(data: bytes, box: Box) -> int:
    """The offset of ``maxBitrate`` in the DecoderConfigDescriptor of an ``esds``
    (ISO/IEC 14496-1 7.2.6.5 and 7.2.6.6); ``avgBitrate`` follows it."""
    at = _descriptor_body(data, _payload_start(box) + 4, 0x03)  # ES_Descriptor
    if at + 3 > len(data):
        raise Mp4Error("esds", "truncated ES_Descriptor")
    flags = data[at + 2]
    at += 3  # ES_ID, flags
    if flags & 0x80:  # streamDependenceFlag: dependsOn_ES_ID
        at += 2
    if flags & 0x40:  # URL_Flag: URLlength, URLstring
        if at >= len(data):
            raise Mp4Error("esds", "truncated URL")
        at += 1 + data[at]
    if flags & 0x20:  # OCRstreamFlag: OCR_ES_Id
        at += 2
    at = _descriptor_body(data, at, 0x04)  # DecoderConfigDescriptor
    at += 5  # objectTypeIndication, streamType/upStream/reserved, bufferSizeDB
    if at + 8 > box.offset + box.size:
        raise Mp4Error("esds", "truncated DecoderConfigDescriptor")
    return at


def with_group_bitrates(init: bytes, max_bitrate_bps: int, average_bitrate_bps: int) -> bytes:
    """``init`` (an ``ftyp`` + ``moov``) with the bitrate fields of its sample entry
    rewritten for a switching group, in place and at the same length.

    A group's stream is whichever rung the origin picks for each segment, so:

    - ``btrt`` (ISO/IEC 14496-12 8.5.2.3): ``maxBitrate``, the maximum rate over
      any window of one second, gets ``max_bitrate_bps``, the highest peak of the
      group, which no pick of the origin exceeds; ``avgBitrate``, the average over
      the presentation, gets ``average_bitrate_bps``, the highest average of the
      group: what the stream averages when the origin picks the top rung throughout;
    - ``esds`` DecoderConfigDescriptor (ISO/IEC 14496-1 7.2.6.6.2, referenced by
      14496-14 5.6): ``maxBitrate`` the same, and ``avgBitrate`` 0, as that clause
      asks for a stream of variable bitrate.

    ``bufferSizeDB`` depends only on the channel count, which a group shares.
    """
    out = bytearray(init)
    start, end = 0, len(init)
    for kind in _SAMPLE_ENTRY_PATH:
        box = _child(init, start, end, kind)
        if box is None:
            raise Mp4Error(kind.decode(), "not found in the init segment")
        start, end = _payload_start(box), box.offset + box.size
    entry = next(iter_boxes(init, start + _STSD_HEADER_BYTES, end), None)
    if entry is None:
        raise Mp4Error("stsd", "holds no sample entry")
    children = _payload_start(entry) + _AUDIO_SAMPLE_ENTRY_BYTES
    entry_end = entry.offset + entry.size
    esds = _child(init, children, entry_end, b"esds")
    if esds is not None:
        at = _esds_bitrates_at(init, esds)
        struct.pack_into(">II", out, at, max_bitrate_bps, 0)
    btrt = _child(init, children, entry_end, b"btrt")
    if btrt is not None:
        struct.pack_into(">II", out, _payload_start(btrt) + 4, max_bitrate_bps, average_bitrate_bps)
    return bytes(out)
