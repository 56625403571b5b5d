"""End-to-end packaging: real encoders, real files, decoded back with FFmpeg."""

from __future__ import annotations

import json
from pathlib import Path

import m3u8
import pytest
from lxml import etree

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import PRESETS
from cadenza.manifests.model import Codec, Presentation, SegmentLayout
from cadenza.packager.mp4read import find_boxes, iter_boxes
from cadenza.packager.track import PackageOptions, package_track
from tests.conftest import MakeInput
from tests.packager.verify import decoded_ticks_after_edit_list, read_edit_list

SCHEMA = Path(__file__).resolve().parent.parent / "data" / "schemas" / "DASH-MPD.xsd"
MUSIC = PackageOptions(ladder=PRESETS["music"])


def _package(source: Path, out: Path, options: PackageOptions = MUSIC) -> Presentation:
    result = package_track(source, out, options)
    assert result.status == "packaged", result.error
    return presentation_from_json((out / result.track_id / "presentation.json").read_bytes())


@pytest.fixture(scope="module")
def stereo_track(
    make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Presentation]:
    out = tmp_path_factory.mktemp("out")
    presentation = _package(make_input("flac", 44100, 2, 9.5), out)
    return out / presentation.track_id, presentation


def test_default_ladder_writes_every_rung(stereo_track: tuple[Path, Presentation]) -> None:
    _, presentation = stereo_track
    assert [r.id for r in presentation.renditions] == [r.id for r in PRESETS["music"].rungs]


def test_every_rendition_folder_holds_init_segments_and_playlist(
    stereo_track: tuple[Path, Presentation],
) -> None:
    folder, presentation = stereo_track
    for rendition in presentation.renditions:
        names = sorted(p.name for p in (folder / rendition.id).iterdir())
        expected = sorted(
            ["init.mp4", "playlist.m3u8", *(rendition.segment_name(s) for s in rendition.segments)]
        )
        assert names == expected


def test_segment_sizes_in_model_match_files(stereo_track: tuple[Path, Presentation]) -> None:
    folder, presentation = stereo_track
    for rendition in presentation.renditions:
        for segment in rendition.segments:
            path = folder / rendition.id / rendition.segment_name(segment)
            assert path.stat().st_size == segment.size_bytes


def test_master_playlist_parses_with_m3u8(stereo_track: tuple[Path, Presentation]) -> None:
    folder, presentation = stereo_track
    master = m3u8.load(str(folder / "master.m3u8"))
    assert [p.uri for p in master.playlists] == [r.playlist_uri for r in presentation.renditions]
    assert {p.stream_info.codecs for p in master.playlists} == {"mp4a.40.2", "opus", "fLaC"}


def test_media_playlists_cover_every_segment(stereo_track: tuple[Path, Presentation]) -> None:
    folder, presentation = stereo_track
    for rendition in presentation.renditions:
        playlist = m3u8.load(str(folder / rendition.playlist_uri))
        assert [s.uri for s in playlist.segments] == [
            rendition.segment_name(s) for s in rendition.segments
        ]
        assert playlist.is_endlist


def test_mpd_validates_against_the_iso_schema(stereo_track: tuple[Path, Presentation]) -> None:
    folder, _ = stereo_track
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    assert schema.validate(etree.parse(str(folder / "manifest.mpd"))), schema.error_log


def test_aac_renditions_cut_at_identical_sample_boundaries(
    stereo_track: tuple[Path, Presentation],
) -> None:
    _, presentation = stereo_track
    timelines = {
        tuple((s.start_ticks, s.duration_ticks) for s in r.segments)
        for r in presentation.renditions
        if r.codec is Codec.AAC
    }
    assert len(timelines) == 1


def test_opus_renditions_cut_at_identical_sample_boundaries(
    stereo_track: tuple[Path, Presentation],
) -> None:
    _, presentation = stereo_track
    timelines = {
        tuple((s.start_ticks, s.duration_ticks) for s in r.segments)
        for r in presentation.renditions
        if r.codec is Codec.OPUS
    }
    assert len(timelines) == 1


@pytest.mark.parametrize(("codec", "frame_ticks"), [(Codec.AAC, 1024), (Codec.OPUS, 960)])
def test_boundaries_fall_on_codec_frames(
    stereo_track: tuple[Path, Presentation], codec: Codec, frame_ticks: int
) -> None:
    _, presentation = stereo_track
    rendition = next(r for r in presentation.renditions if r.codec is codec)
    assert all(s.start_ticks % frame_ticks == 0 for s in rendition.segments)


def test_segments_are_near_the_target_duration(stereo_track: tuple[Path, Presentation]) -> None:
    _, presentation = stereo_track
    for rendition in presentation.renditions:
        for segment in rendition.segments[:-1]:
            assert abs(segment.duration_ticks / rendition.timescale - 4.0) < 0.11


def test_each_segment_file_holds_exactly_one_fragment(
    stereo_track: tuple[Path, Presentation],
) -> None:
    folder, presentation = stereo_track
    for rendition in presentation.renditions:
        for segment in rendition.segments:
            data = (folder / rendition.id / rendition.segment_name(segment)).read_bytes()
            assert [b.type for b in iter_boxes(data)] == ["styp", "moof", "mdat"]


def test_tfdt_is_continuous(stereo_track: tuple[Path, Presentation]) -> None:
    folder, presentation = stereo_track
    for rendition in presentation.renditions:
        for segment in rendition.segments:
            data = (folder / rendition.id / rendition.segment_name(segment)).read_bytes()
            tfdt = find_boxes(data, "moof/traf/tfdt")[0]
            assert int.from_bytes(tfdt.payload[-8:], "big") == segment.start_ticks


def test_loudness_is_measured(stereo_track: tuple[Path, Presentation]) -> None:
    _, presentation = stereo_track
    assert presentation.loudness is not None
    assert presentation.loudness.integrated_lufs is not None  # a 9.5 s track gates
    assert -40 < presentation.loudness.integrated_lufs < 0
    assert presentation.loudness.true_peak_dbtp <= 0.5


def test_loudness_is_signalled_in_both_manifests(stereo_track: tuple[Path, Presentation]) -> None:
    folder, presentation = stereo_track
    assert presentation.loudness is not None
    value = f"{presentation.loudness.integrated_lufs:.1f}"
    assert value in (folder / "master.m3u8").read_text()
    assert value in (folder / "manifest.mpd").read_text()


def test_presentation_json_lists_bitrates_and_bytes(
    stereo_track: tuple[Path, Presentation],
) -> None:
    folder, presentation = stereo_track
    raw = json.loads((folder / "presentation.json").read_text())
    text = json.dumps(raw)
    for key in ("codecs", "peak", "average", "sample_rate", "channels"):
        assert key in text
    lossy = [r for r in presentation.renditions if r.target_bitrate_bps]
    for rendition in lossy:
        assert rendition.peak_bitrate_bps >= rendition.average_bitrate_bps > 0


@pytest.mark.parametrize("rate_hz", [44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_every_rendition_decodes_back_to_the_source_duration(
    make_input: MakeInput, tmp_path: Path, rate_hz: int, channels: int
) -> None:
    """Gapless: after the edit list, each rendition lasts exactly as long as the source (±1 ms)."""
    source_s = 2.3
    presentation = _package(make_input("flac", rate_hz, channels, source_s), tmp_path)
    folder = tmp_path / presentation.track_id
    assert presentation.duration_ticks == round(source_s * rate_hz)
    for rendition in presentation.renditions:
        ticks = decoded_ticks_after_edit_list(folder / rendition.id, rendition)
        assert abs(ticks / rendition.sample_rate_hz - source_s) <= 0.001, rendition.id


def test_edit_list_carries_aac_priming(stereo_track: tuple[Path, Presentation]) -> None:
    folder, presentation = stereo_track
    rendition = presentation.rendition("aac-128k")
    media_time, duration = read_edit_list((folder / "aac-128k" / "init.mp4").read_bytes())
    assert (media_time, duration) == (1024, rendition.duration_ticks)


def test_edit_list_carries_opus_pre_skip(stereo_track: tuple[Path, Presentation]) -> None:
    folder, _ = stereo_track
    media_time, _duration = read_edit_list((folder / "opus-64k" / "init.mp4").read_bytes())
    assert media_time == 312


def test_flac_keeps_24_bit_sources_at_24_bits(make_input: MakeInput, tmp_path: Path) -> None:
    presentation = _package(
        make_input("flac24", 96000, 2, 1.0), tmp_path, PackageOptions(ladder=PRESETS["lossless"])
    )
    assert presentation.renditions[0].bits_per_sample == 24


def test_flac_keeps_16_bit_sources_at_16_bits(make_input: MakeInput, tmp_path: Path) -> None:
    presentation = _package(
        make_input("wav", 48000, 2, 1.0), tmp_path, PackageOptions(ladder=PRESETS["lossless"])
    )
    assert presentation.renditions[0].bits_per_sample == 16


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "opus"])
def test_common_input_formats_package(make_input: MakeInput, tmp_path: Path, kind: str) -> None:
    presentation = _package(
        make_input(kind, 48000, 2, 1.5), tmp_path, PackageOptions(ladder=PRESETS["lossy"])
    )
    # Lossy sources carry their own priming; cadenza measures what decodes.
    assert abs(presentation.duration_ticks / presentation.timescale - 1.5) < 0.06


def test_single_file_layout_addresses_fragments_by_byte_range(
    make_input: MakeInput, tmp_path: Path
) -> None:
    presentation = _package(
        make_input("flac", 44100, 2, 9.0),
        tmp_path,
        PackageOptions(ladder=PRESETS["lossy"], single_file=True),
    )
    folder = tmp_path / presentation.track_id
    for rendition in presentation.renditions:
        assert rendition.layout is SegmentLayout.SINGLE
        data = (folder / rendition.id / "media.mp4").read_bytes()
        assert rendition.index_range is not None
        index = rendition.index_range
        assert data[index.offset_bytes + 4 : index.offset_bytes + 8] == b"sidx"
        for segment in rendition.segments:
            assert segment.byte_range is not None
            start = segment.byte_range.offset_bytes
            assert data[start + 4 : start + 8] == b"moof"
        last = rendition.segments[-1].byte_range
        assert last is not None and last.offset_bytes + last.length_bytes == len(data)


def test_single_file_renditions_decode_gaplessly(make_input: MakeInput, tmp_path: Path) -> None:
    presentation = _package(
        make_input("flac", 48000, 2, 2.0),
        tmp_path,
        PackageOptions(ladder=PRESETS["lossy"], single_file=True),
    )
    folder = tmp_path / presentation.track_id
    for rendition in presentation.renditions:
        ticks = decoded_ticks_after_edit_list(folder / rendition.id, rendition)
        assert ticks == rendition.duration_ticks


def test_rungs_a_mono_source_cannot_fill_are_skipped_with_a_warning(
    make_input: MakeInput, tmp_path: Path
) -> None:
    """AAC allows 6144 bits per channel per frame (ISO/IEC 14496-3): 320 kb/s mono does not fit."""
    result = package_track(make_input("flac", 44100, 1, 1.0), tmp_path, MUSIC)
    assert result.status == "packaged"
    assert any("aac-320k" in w and "ceiling" in w for w in result.warnings)
    assert not (tmp_path / result.track_id / "aac-320k").exists()
