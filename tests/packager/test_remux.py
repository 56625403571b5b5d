"""``cadenza segment``: pre-encoded rungs cut into CMAF + HLS + DASH without re-encoding,
checked like ``cadenza package`` output and against the input's own packets."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest
from av.audio.stream import AudioStream
from lxml import etree

from cadenza.cli import main
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import Codec, Presentation, Rendition, SegmentLayout
from cadenza.packager import mp4
from cadenza.packager.errors import InputError
from cadenza.packager.fingerprint import current_names
from cadenza.packager.mp4read import find_boxes, iter_boxes
from cadenza.packager.remux import (
    RemuxOptions,
    nominal_bitrates,
    remux_track,
    rendition_ids,
)
from cadenza.packager.rung_headers import opus_packet_ticks
from cadenza.store.atomic import TMP_PREFIX
from samples.make_sample import LAYOUTS, synthesize, write_audio
from tests.conftest import MakeInput
from tests.packager.verify import (
    decoded_ticks,
    decoded_ticks_after_edit_list,
    read_edit_list,
    rendition_bytes,
)

SCHEMA = Path(__file__).resolve().parent.parent / "data" / "schemas" / "DASH-MPD.xsd"
SOURCE_S = 9.5
# name -> (suffix, codec, sample format, container, bit rate, rate); one file per rung.
RUNGS: dict[str, tuple[str, str, str, str | None, int | None, int]] = {
    "aac64": (".m4a", "aac", "fltp", "ipod", 64_000, 44100),
    "aac128": (".m4a", "aac", "fltp", "ipod", 128_000, 44100),
    "aac192-adts": (".aac", "aac", "fltp", "adts", 192_000, 44100),
    "opus64-ogg": (".ogg", "libopus", "flt", "ogg", 64_000, 48000),
    "opus128-mp4": (".mp4", "libopus", "flt", "mp4", 128_000, 48000),
    "flac": (".flac", "flac", "s16", None, None, 44100),
    "flac-mp4": (".mp4", "flac", "s16", "mp4", None, 44100),
}


def _encode(
    path: Path,
    codec: str,
    fmt: str,
    container: str | None,
    bit_rate: int | None,
    rate_hz: int,
    duration_s: float = SOURCE_S,
    options: dict[str, str] | None = None,
) -> Path:
    samples = synthesize(duration_s, rate_hz, 2)
    if options is None:
        write_audio(
            path, samples, rate_hz, codec=codec, sample_format=fmt, container=container,
            bit_rate=bit_rate,
        )  # fmt: skip
        return path
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate_hz, options=options)
        assert isinstance(stream, AudioStream)
        stream.layout = LAYOUTS[2]
        stream.format = fmt
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.T.reshape(1, -1)), format="flt", layout="stereo"
        )
        frame.sample_rate = rate_hz
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def rung_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rungs")
    return {
        name: _encode(folder / f"{name}{suffix}", codec, fmt, container, bit_rate, rate)
        for name, (suffix, codec, fmt, container, bit_rate, rate) in RUNGS.items()
    }


@pytest.fixture(scope="module")
def remuxed(
    rung_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Presentation]:
    out = tmp_path_factory.mktemp("out")
    result = remux_track("song", list(rung_files.values()), out, RemuxOptions())
    assert result.status == "packaged"
    folder = out / "song"
    presentation = presentation_from_json((folder / "presentation.json").read_bytes())
    assert presentation == result.presentation
    return folder, presentation


def _by_input(presentation: Presentation) -> dict[str, Rendition]:
    return dict(zip(RUNGS, presentation.renditions, strict=True))


def _input_packets(path: Path) -> list[bytes]:
    """The input's coded frames as FFmpeg demuxes them, ADTS headers removed."""
    with av.open(str(path), options={"ignore_editlist": "1"}) as container:
        stream = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    if path.suffix == ".aac":
        packets = [p[7 if p[1] & 1 else 9 :] for p in packets]
    return packets


def _output_packets(folder: Path, rendition: Rendition) -> list[bytes]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(rendition_bytes(folder, rendition))
        handle.flush()
        with av.open(handle.name, options={"ignore_editlist": "1"}) as container:
            stream = container.streams.audio[0]
            return [bytes(p) for p in container.demux(stream) if p.size]


# -- the same checks as cadenza package output ------------------------------------------


def test_one_rendition_per_input_in_order(remuxed: tuple[Path, Presentation]) -> None:
    _, presentation = remuxed
    ids = [r.id for r in presentation.renditions]
    # Bit rates within 3 % of a customary one take its name; Ogg declares none, and
    # libopus's VBR overshoots 64 kb/s on this tonal signal: the measured rate names it.
    assert ids[:3] == ["aac-64k", "aac-128k", "aac-192k"]
    assert re.fullmatch(r"opus-(6[5-9]|[78]\d)k", ids[3])
    assert ids[4:] == ["opus-128k", "flac", "flac-2"]
    codecs = [r.codecs for r in presentation.renditions]
    assert codecs == ["mp4a.40.2"] * 3 + ["opus"] * 2 + ["fLaC"] * 2
    flac = presentation.rendition("flac")
    assert flac.bits_per_sample == 16 and flac.target_bitrate_bps is None
    for rendition in presentation.renditions:
        if not rendition.codec.lossless:
            assert rendition.target_bitrate_bps is not None
            assert rendition.peak_bitrate_bps >= rendition.average_bitrate_bps > 0


def test_every_rendition_folder_holds_init_segments_and_playlist(
    remuxed: tuple[Path, Presentation],
) -> None:
    folder, presentation = remuxed
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["master.m3u8", "manifest.mpd", "presentation.json"]
        + [r.id for r in presentation.renditions]
    )
    for rendition in presentation.renditions:
        names = sorted(p.name for p in (folder / rendition.id).iterdir())
        expected = sorted(
            ["init.mp4", "playlist.m3u8", *(rendition.segment_name(s) for s in rendition.segments)]
        )
        assert names == expected
        for segment in rendition.segments:
            path = folder / rendition.id / rendition.segment_name(segment)
            assert path.stat().st_size == segment.size_bytes
    assert not list(folder.parent.glob(f"{TMP_PREFIX}*"))


def test_playlists_parse_with_m3u8(remuxed: tuple[Path, Presentation]) -> None:
    folder, presentation = remuxed
    master = m3u8.load(str(folder / "master.m3u8"))
    assert [p.uri for p in master.playlists] == [r.playlist_uri for r in presentation.renditions]
    for rendition in presentation.renditions:
        playlist = m3u8.load(str(folder / rendition.playlist_uri))
        assert [s.uri for s in playlist.segments] == [
            rendition.segment_name(s) for s in rendition.segments
        ]
        assert playlist.is_endlist


def test_mpd_validates_against_the_iso_schema(remuxed: tuple[Path, Presentation]) -> None:
    folder, _ = remuxed
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    assert schema.validate(etree.parse(str(folder / "manifest.mpd"))), schema.error_log


@pytest.mark.parametrize(("codec", "frame_ticks"), [(Codec.AAC, 1024), (Codec.OPUS, 960)])
def test_renditions_of_a_codec_cut_at_identical_frame_boundaries(
    remuxed: tuple[Path, Presentation], codec: Codec, frame_ticks: int
) -> None:
    _, presentation = remuxed
    timelines = {
        tuple((s.start_ticks, s.duration_ticks) for s in r.segments)
        for r in presentation.renditions
        if r.codec is codec
    }
    assert len(timelines) == 1
    (timeline,) = timelines
    assert all(start % frame_ticks == 0 for start, _ in timeline)
    assert len(timeline) == 3  # 9.5 s in 4 s segments


def test_segments_are_near_the_target_duration(remuxed: tuple[Path, Presentation]) -> None:
    _, presentation = remuxed
    for rendition in presentation.renditions:
        for segment in rendition.segments[:-1]:
            assert abs(segment.duration_ticks / rendition.timescale - 4.0) < 0.11


def test_each_segment_is_one_fragment_with_a_continuous_tfdt(
    remuxed: tuple[Path, Presentation],
) -> None:
    folder, presentation = remuxed
    for rendition in presentation.renditions:
        for segment in rendition.segments:
            data = (folder / rendition.id / rendition.segment_name(segment)).read_bytes()
            assert [b.type for b in iter_boxes(data)] == ["styp", "moof", "mdat"]
            tfdt = find_boxes(data, "moof/traf/tfdt")[0]
            assert int.from_bytes(tfdt.payload[-8:], "big") == segment.start_ticks


def test_edit_lists_carry_priming_and_the_exact_duration(
    remuxed: tuple[Path, Presentation],
) -> None:
    folder, presentation = remuxed
    by_input = _by_input(presentation)
    expected = {
        "aac64": (1024, round(SOURCE_S * 44100)),  # from the M4A's own edit list
        "aac128": (1024, round(SOURCE_S * 44100)),
        "opus64-ogg": (312, round(SOURCE_S * 48000)),  # OpusHead pre-skip
        "opus128-mp4": (312, round(SOURCE_S * 48000)),
        "flac": (0, round(SOURCE_S * 44100)),
        "flac-mp4": (0, round(SOURCE_S * 44100)),
    }
    for name, edit in expected.items():
        rendition = by_input[name]
        init = (folder / rendition.id / "init.mp4").read_bytes()
        assert read_edit_list(init) == edit, name
        assert (rendition.encoder_delay_ticks, rendition.duration_ticks) == edit
    assert presentation.duration_ticks == round(SOURCE_S * 44100)


def test_adts_gets_the_standard_aac_priming(remuxed: tuple[Path, Presentation]) -> None:
    """ADTS says nothing of priming or padding: 1024 priming, the padding stays."""
    folder, presentation = remuxed
    rendition = _by_input(presentation)["aac192-adts"]
    media_time, duration = read_edit_list((folder / rendition.id / "init.mp4").read_bytes())
    assert media_time == 1024
    assert duration == rendition.media_duration_ticks - 1024
    assert 0 <= duration - round(SOURCE_S * 44100) < 2048


def test_every_rendition_decodes_back_to_the_source_duration(
    remuxed: tuple[Path, Presentation],
) -> None:
    folder, presentation = remuxed
    for name, rendition in _by_input(presentation).items():
        ticks = decoded_ticks_after_edit_list(folder / rendition.id, rendition)
        seconds = ticks / rendition.sample_rate_hz
        if name.endswith("adts"):
            assert 0 <= seconds - SOURCE_S < 2048 / 44100
        else:
            assert abs(seconds - SOURCE_S) <= 0.001, name


def test_packets_are_byte_identical_to_the_input(
    remuxed: tuple[Path, Presentation], rung_files: dict[str, Path]
) -> None:
    folder, presentation = remuxed
    for name, rendition in _by_input(presentation).items():
        expected = _input_packets(rung_files[name])
        assert len(expected) > 80
        assert _output_packets(folder / rendition.id, rendition) == expected, name


def test_codec_configuration_is_carried_over(
    remuxed: tuple[Path, Presentation], rung_files: dict[str, Path]
) -> None:
    """The decoder sees the input's own AudioSpecificConfig, OpusHead and STREAMINFO."""
    folder, presentation = remuxed
    for name, rendition in _by_input(presentation).items():
        if name.endswith("adts"):
            continue  # ADTS has no extradata; the config is built from its header
        with av.open(str(rung_files[name])) as source:
            expected = bytes(source.streams.audio[0].codec_context.extradata or b"")
        with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
            handle.write((folder / rendition.id / "init.mp4").read_bytes())
            handle.flush()
            with av.open(handle.name) as output:
                got = bytes(output.streams.audio[0].codec_context.extradata or b"")
        assert got[:34] == expected[:34], name


def test_single_file_layout(rung_files: dict[str, Path], tmp_path: Path) -> None:
    files = [rung_files["aac128"], rung_files["opus64-ogg"], rung_files["flac"]]
    result = remux_track("one", files, tmp_path, RemuxOptions(single_file=True))
    assert result.presentation is not None
    folder = tmp_path / "one"
    for rendition in result.presentation.renditions:
        assert rendition.layout is SegmentLayout.SINGLE
        data = (folder / rendition.id / "media.mp4").read_bytes()
        assert rendition.index_range is not None
        index = rendition.index_range
        assert data[index.offset_bytes + 4 : index.offset_bytes + 8] == b"sidx"
        ticks = decoded_ticks_after_edit_list(folder / rendition.id, rendition)
        assert ticks == rendition.duration_ticks
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    assert schema.validate(etree.parse(str(folder / "manifest.mpd"))), schema.error_log


def test_segment_duration_is_rounded_to_whole_frames(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    files = [rung_files["aac64"], rung_files["aac128"], rung_files["opus64-ogg"]]
    result = remux_track("two", files, tmp_path, RemuxOptions(segment_duration=Fraction(2)))
    assert result.presentation is not None
    aac, _, opus = result.presentation.renditions
    assert aac.segments[0].duration_ticks == round(2 * 44100 / 1024) * 1024
    assert opus.segments[0].duration_ticks == 100 * 960


def test_nominal_bitrates_snap_to_customary_rates_without_colliding() -> None:
    codecs = [Codec.AAC, Codec.AAC, Codec.AAC, Codec.OPUS, Codec.FLAC]
    measured = [65_465, 252_878, 261_346, 70_187, 401_608]
    nominal = nominal_bitrates(codecs, measured)
    assert nominal == [64_000, 256_000, 261_000, 70_000, None]
    assert rendition_ids(codecs, nominal) == [
        "aac-64k",
        "aac-256k",
        "aac-261k",
        "opus-70k",
        "flac",
    ]
    assert rendition_ids([Codec.FLAC, Codec.FLAC], [None, None]) == ["flac", "flac-2"]


def test_opus_packet_durations_from_the_toc() -> None:
    assert opus_packet_ticks(bytes([0xFC])) == 960  # CELT FB 20 ms, one frame
    assert opus_packet_ticks(bytes([0xFD, 0])) == 1920  # two frames
    assert opus_packet_ticks(bytes([0x03 | (1 << 3), 3])) == 3 * 960  # SILK 20 ms, code 3
    assert opus_packet_ticks(bytes([16 << 3])) == 120  # CELT 2.5 ms


# -- the command -------------------------------------------------------------------


def test_cli_writes_the_track_and_skips_it_when_complete(
    rung_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    files = [str(rung_files["aac64"]), str(rung_files["opus64-ogg"])]
    assert main(["segment", *files, "--track-id", "cli", "--out", str(out)]) == 0
    marker = out / "cli" / "presentation.json"
    before = marker.stat().st_mtime_ns
    assert main(["segment", *files, "--track-id", "cli", "--out", str(out)]) == 0
    assert "already complete" in capsys.readouterr().err
    assert marker.stat().st_mtime_ns == before
    assert main(["segment", *files, "--track-id", "cli", "--out", str(out), "--force"]) == 0
    assert marker.stat().st_mtime_ns != before


@pytest.mark.parametrize("track_id", ["../up", ".hidden", "a/b", ""])
def test_cli_refuses_unsafe_track_ids(
    rung_files: dict[str, Path], tmp_path: Path, track_id: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(rung_files["flac"]), "--track-id", track_id, "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_cli_reports_a_bad_input_with_status_1(
    rung_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.m4a"
    args = [str(rung_files["flac"]), str(missing), "--track-id", "x", "--out", str(tmp_path / "o")]
    assert main(["segment", *args]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []


# -- errors ------------------------------------------------------------------------


def _fail(files: list[Path], out: Path) -> InputError:
    out.mkdir(exist_ok=True)
    with pytest.raises(InputError) as info:
        remux_track("bad", files, out, RemuxOptions())
    assert list(out.iterdir()) == []  # nothing half-written, no working folder
    return info.value


def test_file_with_no_audio_stream(tmp_path: Path) -> None:
    source = tmp_path / "silent-film.mp4"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    error = _fail([source], tmp_path / "out")
    assert error.path == str(source)
    assert error.reason == "has no audio stream (streams found: video)"


def test_mp3_is_an_unsupported_codec(
    make_input: MakeInput, rung_files: dict[str, Path], tmp_path: Path
) -> None:
    mp3 = make_input("mp3", 44100, 2, 1.0)
    error = _fail([rung_files["aac64"], mp3], tmp_path / "out")
    assert error.path == str(mp3)
    assert error.reason.startswith("unsupported codec mp3:")


@pytest.mark.parametrize(
    ("asc_bits", "name"),
    [
        # AOT 5 (SBR), core 22.05 kHz, stereo, extension 44.1 kHz, then AOT 2
        ("00101 0111 0010 0100 00010 000", "HE-AAC (SBR)"),
        # AOT 29 (PS), core 22.05 kHz, mono, extension 44.1 kHz, then AOT 2
        ("11101 0111 0001 0100 00010 000", "HE-AAC v2 (PS)"),
        ("00001 0100 0010 000", "AAC Main"),
    ],
)
def test_he_aac_and_other_aac_profiles_are_refused(
    rung_files: dict[str, Path], tmp_path: Path, asc_bits: str, name: str
) -> None:
    """FFmpeg reports an explicitly signalled HE-AAC stream as profile LC: the
    AudioSpecificConfig's object type is what tells."""
    bits = asc_bits.replace(" ", "")
    padded = bits + "0" * (-len(bits) % 8)
    asc = int(padded, 2).to_bytes(len(padded) // 8, "big")
    packets = _input_packets(rung_files["aac64"])[:50]
    track = mp4.TrackConfig(Codec.AAC, 44100, 2, asc, 0, 50 * 1024, 64000, 64000)
    source = tmp_path / "he.mp4"
    source.write_bytes(
        mp4.build_init_segment(track) + mp4.build_media_segment(track, 1, 0, packets, [1024] * 50)
    )
    error = _fail([source], tmp_path / "out")
    assert error.reason.startswith(f"unsupported AAC profile {name}:")


def test_rungs_of_one_codec_at_different_sample_rates(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    other = _encode(tmp_path / "aac48k.m4a", "aac", "fltp", "ipod", 96_000, 48000, 2.0)
    error = _fail([rung_files["aac64"], rung_files["flac"], other], tmp_path / "out")
    assert error.path == str(other)
    assert "aac at 48000 Hz, but aac64.m4a is at 44100 Hz" in error.reason


def test_rungs_of_one_codec_with_different_frame_sizes(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    short_frames = _encode(
        tmp_path / "opus10ms.ogg", "libopus", "flt", "ogg", 64_000, 48000, 2.0,
        options={"frame_duration": "10"},
    )  # fmt: skip
    error = _fail([rung_files["opus64-ogg"], short_frames], tmp_path / "out")
    assert "opus frames of 480 samples, but opus64-ogg.ogg has 960" in error.reason


def test_rungs_of_one_codec_that_do_not_line_up(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    shorter = _encode(tmp_path / "short.m4a", "aac", "fltp", "ipod", 96_000, 44100, 5.0)
    error = _fail([rung_files["aac64"], shorter], tmp_path / "out")
    assert error.path == str(shorter)
    assert "segments do not line up with aac64.m4a's from segment 2" in error.reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        (b"", "file is empty (0 bytes)"),
        (b"not audio at all\n" * 4000, "not a media file FFmpeg can read (invalid data)"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, reason: str) -> None:
    source = tmp_path / "rung.m4a"
    if content is not None:
        source.write_bytes(content)
    error = _fail([source], tmp_path / "out")
    assert (error.path, error.reason) == (str(source), reason)


def test_decoded_length_matches_the_segments(remuxed: tuple[Path, Presentation]) -> None:
    """Nothing dropped on the way: the decoder sees every frame the segments declare."""
    folder, presentation = remuxed
    rendition = presentation.rendition("aac-128k")
    data = rendition_bytes(folder / rendition.id, rendition)
    assert decoded_ticks(data) == rendition.media_duration_ticks


# -- republishing (the rule cadenza package follows) --------------------------------


def test_a_republished_track_gets_new_names_and_keeps_the_old_set(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    """Segments are served immutable: segmenting again (``force``) must write every
    file under a fresh version tag, and the first set must stay whole beside it."""
    files = [rung_files["aac64"], rung_files["aac128"]]
    first = remux_track("t", files, tmp_path, RemuxOptions())
    assert first.presentation is not None
    assert {r.name_tag for r in first.presentation.renditions} == {""}
    old_names = current_names(first.presentation)
    old_bytes = {n: (tmp_path / "t" / n).read_bytes() for n in old_names if "/" in n}

    again = remux_track("t", files, tmp_path, RemuxOptions(force=True))
    assert (again.status, again.reason) == ("packaged", "repackaged: --force")
    assert again.presentation is not None
    tags = {r.name_tag for r in again.presentation.renditions}
    assert len(tags) == 1 and "" not in tags
    new_names = current_names(again.presentation)
    assert not (new_names & set(old_bytes))  # no rendition file rewritten in place
    for name, data in old_bytes.items():  # the earlier set is still served, unchanged
        assert (tmp_path / "t" / name).read_bytes() == data
    for name in new_names:
        assert (tmp_path / "t" / name).is_file()
    (tag,) = tags
    for rendition in again.presentation.renditions:
        playlist = m3u8.load(str(tmp_path / "t" / rendition.id / rendition.playlist_name))
        uris = [s.uri for s in playlist.segments] + [playlist.segment_map[0].uri]
        assert uris and all(tag in uri for uri in uris)
    assert tag in (tmp_path / "t" / "manifest.mpd").read_text()


def test_a_fingerprint_of_every_rung_file_decides_skip_or_redo(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    files = [rung_files["aac64"], rung_files["opus64-ogg"]]
    first = remux_track("t", files, tmp_path, RemuxOptions())
    assert first.presentation is not None
    recorded = presentation_from_json((tmp_path / "t" / "presentation.json").read_bytes())
    assert recorded.fingerprint is not None
    rungs = json.loads(recorded.fingerprint.ladder)
    assert [r["sha256"] for r in rungs] == [
        hashlib.sha256(f.read_bytes()).hexdigest() for f in files
    ]
    assert recorded.fingerprint.source_name == "aac64.m4a, opus64-ogg.ogg"

    same = remux_track("t", files, tmp_path, RemuxOptions())
    assert (same.status, same.reason) == ("skipped", "up to date: fingerprint matches")

    longer = remux_track("t", files, tmp_path, RemuxOptions(segment_duration=Fraction(6)))
    assert (longer.status, longer.reason) == (
        "packaged",
        "repackaged: segment_duration changed",
    )

    changed = tmp_path / "in" / "aac64.m4a"  # same path as before for the location
    changed.parent.mkdir()
    changed.write_bytes(files[0].read_bytes())
    remux_track("u", [changed, files[1]], tmp_path, RemuxOptions())
    _encode(changed, "aac", "fltp", "ipod", 96_000, 44100)
    redone = remux_track("u", [changed, files[1]], tmp_path, RemuxOptions())
    assert (redone.status, redone.reason) == ("packaged", "repackaged: source, ladder changed")
    assert redone.presentation is not None
    assert redone.presentation.renditions[0].name_tag != ""


def test_other_files_under_a_taken_track_id_are_refused_unless_forced(
    rung_files: dict[str, Path], tmp_path: Path
) -> None:
    remux_track("t", [rung_files["aac64"]], tmp_path, RemuxOptions())
    before = (tmp_path / "t" / "presentation.json").read_bytes()
    with pytest.raises(InputError) as info:
        remux_track("t", [rung_files["flac"]], tmp_path, RemuxOptions())
    assert "aac64.m4a" in info.value.reason and "flac.flac" in info.value.reason
    assert (tmp_path / "t" / "presentation.json").read_bytes() == before
    forced = remux_track("t", [rung_files["flac"]], tmp_path, RemuxOptions(force=True))
    assert forced.status == "packaged"
