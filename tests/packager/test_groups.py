"""Switching groups from real packaging: the packager records them in
``presentation.json``, gives the rungs of a group one byte-identical init segment,
keeps out a rung that would break its group, and FFmpeg decodes a group's init
followed by segments of any of its rungs, mixed, as the origin will serve them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from lxml import etree

from cadenza.manifests.dash import render_group_mpd
from cadenza.manifests.groups import derive_groups
from cadenza.manifests.hls import render_group_master, render_group_playlist
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec, Presentation, Rendition
from cadenza.packager import mp4
from cadenza.packager.errors import Mp4Error
from cadenza.packager.mp4read import find_boxes
from cadenza.packager.remux import RemuxOptions, remux_track
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import synthesize, write_audio
from tests.conftest import MakeInput
from tests.packager.verify import decoded_ticks, decoded_ticks_after_edit_list, read_edit_list

SCHEMA = Path(__file__).resolve().parent.parent / "data" / "schemas" / "DASH-MPD.xsd"
KBPS = 1000
# validate_ladder refuses a codec at two sample rates, so this ladder is built as a
# hand-made or older one could be: the packager must keep the odd rungs out of the
# group rather than mix them in.  aac-96k runs at 22050 Hz, aac-48k-1ch is mono.
LADDER = Ladder(
    "groups",
    (
        Rung(Codec.AAC, 64 * KBPS),
        Rung(Codec.AAC, 256 * KBPS),
        Rung(Codec.AAC, 128 * KBPS),
        Rung(Codec.AAC, 96 * KBPS, sample_rate_hz=22050),
        Rung(Codec.AAC, 48 * KBPS, channels=1),
        Rung(Codec.OPUS, 64 * KBPS),
        Rung(Codec.OPUS, 128 * KBPS),
        Rung(Codec.FLAC),
    ),
)


def _package(source: Path, out: Path, options: PackageOptions) -> tuple[Path, Presentation]:
    result = package_track(source, out, options)
    assert result.status == "packaged", result.error
    folder = out / result.track_id
    return folder, presentation_from_json((folder / "presentation.json").read_bytes())


@pytest.fixture(scope="module")
def track(
    make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Presentation]:
    source = make_input("flac", 44100, 2, 9.5)
    return _package(source, tmp_path_factory.mktemp("out"), PackageOptions(ladder=LADDER))


def _members(presentation: Presentation, group_id: str) -> list[Rendition]:
    return [presentation.rendition(i) for i in presentation.group(group_id).rendition_ids]


def _bitrate_fields(init: bytes) -> dict[str, tuple[int, int]]:
    """(maxBitrate, avgBitrate) of the sample entry's ``btrt`` and, for AAC, ``esds``."""
    stsd = find_boxes(init, "moov/trak/mdia/minf/stbl/stsd")[0].payload
    entry = stsd[8:]
    children = entry[8 + 28 :]
    fields: dict[str, tuple[int, int]] = {}
    at = 0
    while at < len(children):
        size, kind = struct.unpack_from(">I4s", children, at)
        payload = children[at + 8 : at + size]
        if kind == b"btrt":
            fields["btrt"] = struct.unpack_from(">II", payload, 4)
        elif kind == b"esds":
            # version/flags (4); ES_Descriptor: tag 0x03, size, ES_ID (2), flags (1);
            # DecoderConfigDescriptor: tag 0x04, size, objectTypeIndication, streamType,
            # bufferSizeDB (3), then maxBitrate and avgBitrate.  Sizes fit one byte here.
            assert (payload[4], payload[9]) == (0x03, 0x04)
            assert payload[5] < 0x80 and payload[10] < 0x80 and payload[8] == 0
            fields["esds"] = struct.unpack_from(">II", payload, 16)
        at += size
    return fields


def test_presentation_json_records_the_groups_of_the_rule(track: tuple[Path, Presentation]) -> None:
    folder, presentation = track
    document = json.loads((folder / "presentation.json").read_text(encoding="utf-8"))
    assert [g["id"] for g in document["groups"]] == ["aac", "aac-2", "aac-3", "opus", "flac"]
    assert presentation.groups == derive_groups(presentation.renditions)
    assert {g.id: g.rendition_ids for g in presentation.groups} == {
        "aac": ("aac-64k", "aac-128k", "aac-256k"),
        "aac-2": ("aac-96k",),
        "aac-3": ("aac-48k-1ch",),
        "opus": ("opus-64k", "opus-128k"),
        "flac": ("flac",),
    }
    assert presentation.group("aac-2").sample_rate_hz == 22050
    assert presentation.group("aac-3").channels == 1
    assert all(r.decoder_config for r in presentation.renditions)


def test_the_rung_at_another_sample_rate_is_kept_out_of_the_group(
    track: tuple[Path, Presentation],
) -> None:
    _, presentation = track
    odd = presentation.rendition("aac-96k")
    assert odd.sample_rate_hz == 22050
    assert presentation.group_of("aac-96k") == presentation.group("aac-2")
    assert "aac-96k" not in presentation.group("aac").rendition_ids
    assert [g.id for g in presentation.switchable_groups()] == ["aac", "opus"]


@pytest.mark.parametrize("group_id", ["aac", "opus"])
def test_the_inits_of_a_group_are_byte_identical(
    track: tuple[Path, Presentation], group_id: str
) -> None:
    folder, presentation = track
    group = presentation.group(group_id)
    inits = {(folder / i / "init.mp4").read_bytes() for i in group.rendition_ids}
    assert len(inits) == 1
    assert inits == {(folder / group.init_uri).read_bytes()}


@pytest.mark.parametrize("group_id", ["aac", "opus"])
def test_a_group_init_states_bitrates_that_bound_every_rung(
    track: tuple[Path, Presentation], group_id: str
) -> None:
    folder, presentation = track
    members = _members(presentation, group_id)
    fields = _bitrate_fields((folder / presentation.group(group_id).init_uri).read_bytes())
    peak = max(r.peak_bitrate_bps for r in members)
    assert fields["btrt"] == (peak, max(r.average_bitrate_bps for r in members))
    if group_id == "aac":
        assert fields["esds"] == (peak, 0)  # variable bitrate: avgBitrate 0 (14496-1)


def test_a_rung_alone_in_its_group_keeps_its_own_bitrates(
    track: tuple[Path, Presentation],
) -> None:
    folder, presentation = track
    odd = presentation.rendition("aac-96k")
    fields = _bitrate_fields((folder / "aac-96k" / "init.mp4").read_bytes())
    assert fields["btrt"] == (odd.peak_bitrate_bps, odd.average_bitrate_bps)
    assert fields["esds"] == (odd.peak_bitrate_bps, odd.average_bitrate_bps)


@pytest.mark.parametrize("group_id", ["aac", "opus"])
def test_the_group_init_decodes_segments_of_every_rung_mixed(
    track: tuple[Path, Presentation], group_id: str
) -> None:
    """What the origin serves: the group's init, then segment n of whichever rung it
    picks.  FFmpeg decodes the mix to exactly as many samples as one rung alone."""
    folder, presentation = track
    members = _members(presentation, group_id)
    init = (folder / presentation.group(group_id).init_uri).read_bytes()
    mixed = [init]
    for index, segment in enumerate(members[0].segments):
        rung = members[(index + 1) % len(members)]  # a switch at every segment
        mixed.append((folder / rung.id / rung.segment_name(segment)).read_bytes())
    data = b"".join(mixed)
    lowest = folder / members[0].id
    own = [(lowest / members[0].segment_name(s)).read_bytes() for s in members[0].segments]
    assert read_edit_list(data) == (members[0].encoder_delay_ticks, members[0].duration_ticks)
    assert decoded_ticks(data) == decoded_ticks(b"".join([init, *own]))
    # and, after the edit list, exactly the source's duration
    assert decoded_ticks_after_edit_list(lowest, members[0]) == members[0].duration_ticks


def test_origin_decided_manifests_of_a_real_track(track: tuple[Path, Presentation]) -> None:
    _, presentation = track
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    mpd = etree.fromstring(render_group_mpd(presentation, session_id="s1").encode())
    assert schema.validate(mpd), schema.error_log
    master = render_group_master(presentation, session_id="s1")
    assert "group-aac/playlist.m3u8?sid=s1" in master.splitlines()
    assert "aac-96k" not in master and "group-aac-2" not in master
    playlist = render_group_playlist(presentation, "opus", session_id="s1")
    assert '#EXT-X-MAP:URI="../opus-128k/init.mp4"' in playlist.splitlines()


def test_single_file_layout_shares_the_init_inside_media_mp4(
    make_input: MakeInput, tmp_path: Path
) -> None:
    ladder = Ladder("two", (Rung(Codec.AAC, 64 * KBPS), Rung(Codec.AAC, 128 * KBPS)))
    folder, presentation = _package(
        make_input("flac", 44100, 2, 5.0), tmp_path, PackageOptions(ladder, single_file=True)
    )
    heads = set()
    for rendition in presentation.renditions:
        assert rendition.init_range is not None
        data = (folder / rendition.id / "media.mp4").read_bytes()
        heads.add(data[: rendition.init_range.length_bytes])
        # The sidx and the fragments after the init are untouched: still gapless.
        ticks = decoded_ticks_after_edit_list(folder / rendition.id, rendition)
        assert ticks == rendition.duration_ticks
    assert len(heads) == 1


def test_segmenting_pre_encoded_rungs_groups_them_too(tmp_path: Path) -> None:
    """``cadenza segment`` shares the packager's publishing: matching rungs form a
    group with one init segment, whatever the files they came from."""
    rate_hz, source = 44100, synthesize(5.0, 44100, 2)
    inputs = []
    for kbps in (64, 128):
        path = tmp_path / f"aac{kbps}.m4a"
        write_audio(
            path, source, rate_hz, codec="aac", sample_format="fltp", container="ipod",
            bit_rate=kbps * KBPS,
        )  # fmt: skip
        inputs.append(path)
    for kbps in (64, 128):
        path = tmp_path / f"opus{kbps}.ogg"
        write_audio(
            path, synthesize(5.0, 48000, 2), 48000, codec="libopus", sample_format="flt",
            container="ogg", bit_rate=kbps * KBPS,
        )  # fmt: skip
        inputs.append(path)
    (tmp_path / "out").mkdir()
    result = remux_track("pre", inputs, tmp_path / "out", RemuxOptions())
    folder = tmp_path / "out" / "pre"
    presentation = presentation_from_json((folder / "presentation.json").read_bytes())
    assert presentation == result.presentation
    # Rendition ids name the measured rates here (libopus overshoots 64 kb/s).
    assert [(g.id, len(g.rendition_ids)) for g in presentation.groups] == [("aac", 2), ("opus", 2)]
    assert presentation.group("aac").rendition_ids == ("aac-64k", "aac-128k")
    for group in presentation.groups:
        inits = {(folder / i / "init.mp4").read_bytes() for i in group.rendition_ids}
        assert len(inits) == 1, group.id


def test_group_bitrates_rewrite_only_the_bitrate_fields() -> None:
    track = mp4.TrackConfig(
        codec=Codec.AAC,
        sample_rate_hz=44100,
        channels=2,
        codec_private=bytes.fromhex("1210"),
        encoder_delay_ticks=1024,
        duration_ticks=44100 * 3,
        average_bitrate_bps=64_500,
        max_bitrate_bps=70_100,
    )
    init = mp4.build_init_segment(track)
    shared = mp4.with_group_bitrates(init, 330_000, 321_000)
    assert len(shared) == len(init)
    assert _bitrate_fields(init) == {"esds": (70_100, 64_500), "btrt": (70_100, 64_500)}
    assert _bitrate_fields(shared) == {"esds": (330_000, 0), "btrt": (330_000, 321_000)}
    changed = [i for i, (a, b) in enumerate(zip(init, shared, strict=True)) if a != b]
    assert len(changed) <= 16  # four 32-bit fields
    with pytest.raises(Mp4Error):
        mp4.with_group_bitrates(init[: len(init) // 2], 1, 1)
    with pytest.raises(Mp4Error):
        mp4.with_group_bitrates(init[:24], 1, 1)
