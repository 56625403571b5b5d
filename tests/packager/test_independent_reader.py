"""The packager's MP4 output read back by readers the project did not write.

The boxes are written by :mod:`cadenza.packager.mp4` and, elsewhere in the tests, read
back by :mod:`cadenza.packager.mp4read`: a misreading of ISO/IEC 14496-12 shared by
both would pass unseen. Here three independent readers check every box type the
packager writes against what ``presentation.json`` says was meant:

- pymp4 (a construct-based ISO BMFF parser) parses every file whole, checking each
  box it knows field by field: ftyp, styp, moov, mvhd, trak, tkhd, mdia, mdhd, hdlr,
  minf, smhd, dinf, dref, ``url ``, stbl, stsd (and the mp4a entry), stts, stsc, stsz,
  stco, mvex, trex, moof, mfhd, traf, tfhd, tfdt, trun, mdat, sidx;
- hachoir's MP4 parser reads the boxes pymp4 leaves opaque: edts, elst, esds, btrt;
- FFmpeg's own mov demuxer and decoders, through PyAV with strict error detection,
  read the Opus and fLaC sample entries with their dOps and dfLa boxes, the esds's
  AudioSpecificConfig, the edit list's start and every sample's decode time, and
  decode every sample.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.logging
import pytest
from hachoir.field import Field, FieldSet
from hachoir.parser.container.mp4 import MP4File
from hachoir.stream import StringInputStream

from cadenza.cli import main
from tests.conftest import MakeInput
from tests.packager.pymp4_boxes import find as _find
from tests.packager.pymp4_boxes import parse_boxes as _pymp4_boxes
from tests.packager.pymp4_boxes import walk as _walk

DURATION_S = 9.0  # three segments of 4 s: two full, one short
SAMPLE_ENTRY = {"aac": b"mp4a", "opus": b"Opus", "flac": b"fLaC"}
# Every box type packager/mp4.py writes (its ``_box(b"...")`` calls).
WRITTEN = {
    b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"edts", b"elst", b"mdia", b"mdhd",
    b"hdlr", b"minf", b"smhd", b"dinf", b"dref", b"url ", b"stbl", b"stsd", b"stts",
    b"stsc", b"stsz", b"stco", b"mvex", b"trex", b"moof", b"mfhd", b"traf", b"tfhd",
    b"tfdt", b"trun", b"mdat", b"styp", b"sidx", b"mp4a", b"Opus", b"fLaC", b"esds",
    b"dOps", b"dfLa", b"btrt",
}  # fmt: skip
# CENC cbcs (packager/mp4_protect.py): only in encrypted output, which pymp4 and FFmpeg
# read in tests/packager/test_encryption_reader.py and test_encryption.py.
PROTECTION = {
    b"enca", b"sinf", b"frma", b"schm", b"schi", b"tenc", b"pssh", b"saiz", b"saio",
    b"senc",
}  # fmt: skip


def test_the_list_of_written_boxes_is_complete() -> None:
    """Every box type named in the packager's writer is in WRITTEN, so the readers
    below cover a box added to the writer, or this test fails."""
    root = Path(__file__).resolve().parents[2] / "packager"
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py")))
    named = {m.encode() for m in re.findall(r'_(?:full_)?box\(\s*b"(.{4})"', source)}
    assert len(named) > 25
    assert named <= WRITTEN | PROTECTION, named - WRITTEN - PROTECTION


@dataclass(frozen=True, slots=True)
class Packaged:
    root: Path  # DIR/<track_id>
    presentation: dict[str, Any]

    def renditions(self) -> list[dict[str, Any]]:
        return list(self.presentation["renditions"])

    def files(self, rendition: dict[str, Any]) -> list[Path]:
        """The rendition's files in play order: init then segments, or the one file."""
        folder = self.root / rendition["id"]
        if rendition["layout"] == "single":
            return [folder / "media.mp4"]
        return [folder / "init.mp4", *sorted(folder.glob("seg-*.m4s"))]


def _package(source: Path, out: Path, *flags: str) -> Packaged:
    assert main(["package", str(source), "--out", str(out), "-q", *flags]) == 0
    root = out / source.stem
    return Packaged(root, json.loads((root / "presentation.json").read_text()))


@pytest.fixture(scope="module", params=["separate", "single"])
def packaged(
    request: pytest.FixtureRequest, make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory
) -> Packaged:
    source = make_input("flac", 44100, 2, DURATION_S, name="reader")
    out = tmp_path_factory.mktemp(f"reader-{request.param}")
    flags = ["--single-file"] if request.param == "single" else []
    result = _package(source, out, "--segment-duration", "4", *flags)
    assert {r["codec"] for r in result.renditions()} == {"aac", "opus", "flac"}
    return result


# -- pymp4 --------------------------------------------------------------------------


def _one(boxes: list[Any], kind: bytes) -> Any:
    (found,) = _find(boxes, kind)
    return found


def _check_init(boxes: list[Any], rendition: dict[str, Any]) -> None:
    timescale = rendition["timescale"]
    ftyp = _one(boxes, b"ftyp")
    assert b"cmfc" in ftyp.compatible_brands and b"iso6" in ftyp.compatible_brands
    assert _one(boxes, b"mvhd").timescale == timescale
    assert _one(boxes, b"mdhd").timescale == timescale
    tkhd = _one(boxes, b"tkhd")
    assert tkhd.flags & 3 == 3  # enabled, in movie
    assert tkhd.volume == 0x100  # an audio track at full volume
    assert _one(boxes, b"hdlr").handler_type == b"soun"
    assert _one(boxes, b"smhd").balance == 0
    (url,) = _one(boxes, b"dref").data_entries
    assert url.type == b"url " and url.flags.self_contained  # media in this file
    (entry,) = _one(boxes, b"stsd").entries
    assert entry.format == SAMPLE_ENTRY[rendition["codec"]]
    if rendition["codec"] == "aac":
        assert (entry.channels, entry.sampling_rate) == (rendition["channels"], timescale)
    for kind in (b"stts", b"stsc", b"stco"):  # fragmented: the samples are in moofs
        assert _one(boxes, kind).entries == []
    assert _one(boxes, b"stsz").sample_count == 0
    trex = _one(boxes, b"trex")
    assert trex.track_ID == tkhd.track_ID and trex.default_sample_description_index == 1


@dataclass(frozen=True, slots=True)
class Fragment:
    sequence_number: int
    decode_time_ticks: int
    duration_ticks: int
    sample_count: int
    size_bytes: int  # moof + mdat (+ styp)


def _fragments(boxes: list[Any], track_id: int) -> list[Fragment]:
    """Each moof checked against its mdat: sample sizes add up, the data offset lands
    on the first sample."""
    fragments = []
    start = 0
    for index, box in enumerate(boxes):
        if box.type == b"styp":
            start = box.offset
            assert box.compatible_brands[:1] == [b"msdh"]
        if box.type != b"moof":
            continue
        if boxes[index - 1].type != b"styp":
            start = box.offset
        mdat = boxes[index + 1]
        assert mdat.type == b"mdat"
        tfhd, tfdt, trun = _one([box], b"tfhd"), _one([box], b"tfdt"), _one([box], b"trun")
        assert tfhd.track_ID == track_id and tfhd.flags.default_base_is_moof
        durations = [
            s.sample_duration
            if trun.flags.sample_duration_present
            else tfhd.default_sample_duration
            for s in trun.sample_info
        ]
        sizes = [s.sample_size for s in trun.sample_info]
        assert trun.sample_count == len(sizes) > 0
        assert sum(sizes) == len(mdat.data)
        assert box.offset + trun.data_offset == mdat.end - len(mdat.data)
        fragments.append(
            Fragment(
                _one([box], b"mfhd").sequence_number,
                tfdt.baseMediaDecodeTime,
                sum(durations),
                trun.sample_count,
                mdat.end - start,
            )
        )
    return fragments


def test_pymp4_reads_every_box_it_knows_as_meant(packaged: Packaged) -> None:
    seen: set[bytes] = set()
    for rendition in packaged.renditions():
        files = packaged.files(rendition)
        boxes = [b for f in files for b in _pymp4_boxes(f.read_bytes())]
        seen |= {b.type for top in boxes for b in _walk(top)}
        seen |= {e.format for e in _one(boxes, b"stsd").entries}
        seen |= {e.type for e in _one(boxes, b"dref").data_entries}
        _check_init(boxes, rendition)
        fragments = _fragments(boxes, _one(boxes, b"tkhd").track_ID)
        segments = rendition["segments"]
        assert [f.sequence_number for f in fragments] == [s["number"] for s in segments]
        assert [f.duration_ticks for f in fragments] == [s["duration_ticks"] for s in segments]
        assert [f.size_bytes for f in fragments] == [s["size_bytes"] for s in segments]
        # Decode times run on without a gap from zero, the priming samples included.
        starts = [sum(f.duration_ticks for f in fragments[:i]) for i in range(len(fragments))]
        assert [f.decode_time_ticks for f in fragments] == starts
        total = sum(f.duration_ticks for f in fragments)
        assert total >= rendition["duration_ticks"] + rendition["encoder_delay_ticks"]
        if rendition["layout"] == "single":
            data = files[0].read_bytes()
            sidx = _one(boxes, b"sidx")
            assert [sidx.offset, sidx.end - sidx.offset] == rendition["index_range"]
            assert rendition["init_range"] == [0, _one(boxes, b"moov").end]
            assert sidx.timescale == rendition["timescale"]
            assert sidx.earliest_presentation_time == 0 and sidx.first_offset == 0
            refs = sidx.references
            assert [r.referenced_size for r in refs] == [s["size_bytes"] for s in segments]
            assert [r.segment_duration for r in refs] == [s["duration_ticks"] for s in segments]
            assert all(r.starts_with_SAP and r.SAP_type == 1 for r in refs)
            assert sidx.end + sum(r.referenced_size for r in refs) == len(data)
    # A CMAF segment file starts with styp; the single file's index is its sidx.
    unused = {b"styp"} if rendition["layout"] == "single" else {b"sidx"}
    # What pymp4 has no parser for, hachoir and FFmpeg read below.
    opaque = {b"elst", b"esds", b"dOps", b"dfLa", b"btrt"}
    assert seen == WRITTEN - unused - opaque | {b"mp4a"} | (opaque & seen)


# -- hachoir ------------------------------------------------------------------------


def _atoms(field_set: FieldSet, tag: str) -> Iterator[FieldSet]:
    for field in field_set:
        if not field.is_field_set:
            continue
        if field.name == tag:
            yield field
        yield from _atoms(field, tag)


def _value(field_set: FieldSet, name: str) -> Any:
    field: Field = field_set[name]
    return field.value


def test_hachoir_reads_the_edit_list_and_esds_as_meant(packaged: Packaged) -> None:
    for rendition in packaged.renditions():
        data = packaged.files(rendition)[0].read_bytes()
        parser = MP4File(StringInputStream(data))
        (elst,) = _atoms(parser, "elst")
        assert _value(elst, "count") == 1
        # The edit trims the encoder's priming and its final padding: gapless playback.
        assert _value(elst, "time[0]") == rendition["encoder_delay_ticks"]
        assert _value(elst, "duration[0]") == rendition["duration_ticks"]
        assert _value(elst, "play_speed[0]") == 1.0
        (entry,) = _atoms(parser, "sample_entry[0]")
        assert _value(entry, "format") == SAMPLE_ENTRY[rendition["codec"]]
        assert _value(entry, "channels") == rendition["channels"]
        esds = list(_atoms(parser, "esds"))
        if rendition["codec"] != "aac":
            assert esds == []
            continue
        (config,) = _atoms(esds[0], "decConfigDescr")
        assert _value(config, "objectTypeIndication") == 0x40  # MPEG-4 Audio
        assert _value(config, "streamType") == 5  # audio
        assert _value(config, "descr[0]/data").hex() == rendition["decoder_config_hex"]
        (btrt,) = _atoms(parser, "btrt")
        assert _value(btrt, "maxBitrate") == _value(config, "maxBitrate") > 0


# -- FFmpeg, through PyAV -----------------------------------------------------------

# Demuxer and decoder alike: check CRCs and bitstreams, stop at the first error, and
# hold to the standard (FFmpeg's -err_detect and -strict).
STRICT = {"err_detect": "crccheck+bitstream+buffer+explode+careful+compliant", "strict": "strict"}


def _ffmpeg_read(data: bytes) -> tuple[Any, list[Any], int, list[tuple[int, str, str]]]:
    """(codec context, packets, samples decoded, FFmpeg's complaints) for one file."""
    av.logging.set_level(av.logging.WARNING)
    try:
        with (
            av.logging.Capture() as logs,
            av.open(io.BytesIO(data), mode="r", format="mp4", options=STRICT) as container,
        ):
            stream = container.streams.audio[0]
            codec = stream.codec_context
            codec.options = dict(STRICT)  # the decoder too: CRCs, bitstream, explode
            packets = [p for p in container.demux(stream) if p.size]
            decoded = 0
            for packet in packets:
                for frame in codec.decode(packet):
                    decoded += frame.samples
            for frame in codec.decode(None):
                decoded += frame.samples
    finally:
        av.logging.set_level(None)
    complaints = [entry for entry in logs if entry[0] <= av.logging.WARNING]
    return codec, packets, decoded, complaints


def _streaminfo(info: bytes) -> tuple[int, int, int, int]:
    """(rate, channels, bits, total samples) from FLAC STREAMINFO (RFC 9639 8.2)."""
    (packed,) = struct.unpack(">Q", info[10:18])
    return packed >> 44, ((packed >> 41) & 7) + 1, ((packed >> 36) & 31) + 1, packed & (2**36 - 1)


def test_ffmpeg_demuxes_and_decodes_every_rendition_as_meant(packaged: Packaged) -> None:
    for rendition in packaged.renditions():
        data = b"".join(f.read_bytes() for f in packaged.files(rendition))
        codec, packets, decoded, complaints = _ffmpeg_read(data)
        assert complaints == [], rendition["id"]
        assert codec.name == rendition["codec"]
        assert codec.sample_rate == rendition["sample_rate_hz"]
        assert codec.layout.nb_channels == rendition["channels"]
        extradata = bytes(codec.extradata or b"")
        delay = rendition["encoder_delay_ticks"]
        if rendition["codec"] == "aac":  # from esds: the AudioSpecificConfig
            assert extradata.hex() == rendition["decoder_config_hex"]
        elif rendition["codec"] == "opus":  # dOps, turned back into an OpusHead
            assert extradata[:8] == b"OpusHead"
            read = struct.unpack_from("<BHIhB", extradata, 9)
            assert read[:2] == (rendition["channels"], delay)
            # The dOps payload meant ("Encapsulation of Opus in ISO Base Media File Format"
            # 4.3.2), big-endian: channels, pre-skip, input rate, output gain, mapping family.
            meant = struct.unpack(">xBHIhB", bytes.fromhex(rendition["decoder_config_hex"]))
            assert read == meant
        else:  # dfLa: STREAMINFO
            assert extradata.hex() == rendition["decoder_config_hex"]
            rate, channels, bits, total = _streaminfo(extradata)
            assert (rate, channels, bits) == (
                rendition["sample_rate_hz"],
                rendition["channels"],
                rendition["bits_per_sample"],
            )
            assert total in (0, rendition["duration_ticks"])  # 0: unknown, allowed
        # FFmpeg applies the edit list's start: the priming samples come before zero.
        assert packets[0].pts == -delay
        ends = [p.dts + p.duration for p in packets]
        assert [p.dts for p in packets[1:]] == ends[:-1]  # contiguous decode times
        segment_ticks = sum(s["duration_ticks"] for s in rendition["segments"])
        assert ends[-1] == segment_ticks - delay
        # Every sample decodes; FFmpeg drops the priming but not the final padding.
        assert decoded == segment_ticks - delay >= rendition["duration_ticks"]


def test_the_strict_ffmpeg_read_notices_a_damaged_sample(packaged: Packaged) -> None:
    """The check above could fail: one flipped byte in a FLAC frame is caught."""
    (flac,) = [r for r in packaged.renditions() if r["codec"] == "flac"]
    data = bytearray(b"".join(f.read_bytes() for f in packaged.files(flac)))
    mdat = data.rindex(b"mdat")
    data[mdat + 200] ^= 0xFF
    try:
        _codec, _packets, _decoded, complaints = _ffmpeg_read(bytes(data))
    except av.error.FFmpegError:
        return
    assert complaints
