"""``cadenza live``'s ingest on a file read as fast as it decodes, with a fake clock:
the files, ``live.json``, the CMAF parts and segments (read by pymp4 and FFmpeg), the
DVR window, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from av.audio.resampler import AudioResampler

from cadenza.cli import main
from cadenza.manifests.live import LIVE_STATE_NAME, LivePresentation
from cadenza.manifests.live_json import live_from_json
from cadenza.packager.errors import InputError
from cadenza.packager.live.cli import LIVE_LADDER
from cadenza.packager.live.grid import LIVE_RATE_HZ
from cadenza.packager.live.ingest import LiveOptions, run_live
from cadenza.packager.live.source import LiveInput
from samples.make_sample import synthesize, write_audio
from tests.conftest import MakeInput
from tests.packager.live_support import FakeClock, decode, named_files, stream_bytes
from tests.packager.pymp4_boxes import find, parse_boxes

SOURCE_S = 6.0
PART_TICKS = 15360  # 0.32 s: 15 AAC frames, 16 Opus frames
SEGMENT_PARTS = 6


@pytest.fixture(scope="module")
def source(make_input: MakeInput) -> Path:
    return make_input("flac", 44100, 2, SOURCE_S, name="live-source")


@pytest.fixture(scope="module")
def packaged(
    source: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, LivePresentation]:
    out = tmp_path_factory.mktemp("live")
    clock = FakeClock()
    final = run_live(
        LiveInput(str(source)), out, "show", LiveOptions(LIVE_LADDER), clock=clock, name="x"
    )
    return out / "show", final


def _source_at_48k(source: Path) -> np.ndarray:
    resampler = AudioResampler(format="fltp", layout="stereo", rate=LIVE_RATE_HZ)
    with av.open(str(source)) as container:
        frames = []
        for frame in container.decode(audio=0):
            frames += [f.to_ndarray() for f in resampler.resample(frame)]
        frames += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(frames, axis=1)


def test_the_model_on_disk_is_the_final_one(packaged: tuple[Path, LivePresentation]) -> None:
    folder, final = packaged
    on_disk = live_from_json((folder / LIVE_STATE_NAME).read_text())
    assert on_disk == final
    assert final.ended
    assert final.part_target_us == 320_000
    assert final.segment_target_us == 1_920_000
    assert [r.id for r in final.renditions] == ["aac-64k", "aac-128k", "opus-96k"]
    for r in final.renditions:
        assert r.timescale == LIVE_RATE_HZ
        assert [s.number for s in r.segments] == [1, 2, 3, 4]
        assert all(s.complete and not s.gap and s.init == 0 for s in r.segments)
        assert [len(s.parts) for s in r.segments] == [6, 6, 6, 1]
        starts = [s.start_ticks for s in r.segments]
        assert starts == [0, 6 * PART_TICKS, 12 * PART_TICKS, 18 * PART_TICKS]
        # Whole frames; the last part ends within a frame after the source.
        total = sum(s.duration_ticks for s in r.segments)
        assert 0 <= total - SOURCE_S * LIVE_RATE_HZ < r.frame_ticks
    for path in named_files(final):
        assert (folder / path).is_file(), path
    for name in (
        "master.m3u8",
        "manifest.mpd",
        *(f"{r.id}/playlist.m3u8" for r in final.renditions),
    ):
        assert (folder / name).stat().st_size > 0
    playlist = (folder / "aac-64k" / "playlist.m3u8").read_text()
    assert "#EXT-X-ENDLIST" in playlist and "seg-00004.p0.m4s" in playlist


def test_parts_concatenate_to_their_segment(packaged: tuple[Path, LivePresentation]) -> None:
    folder, final = packaged
    for r in final.renditions:
        for s in r.segments:
            parts = [(folder / r.id / p.name(s.number)).read_bytes() for p in s.parts]
            assert [len(p) for p in parts] == [p.size_bytes for p in s.parts]
            assert b"".join(parts) == (folder / r.id / s.name).read_bytes()


def test_every_part_parses_with_its_grid_decode_time(
    packaged: tuple[Path, LivePresentation],
) -> None:
    """pymp4 reads each part whole: the first of a segment opens with ``styp``, the
    others are a bare ``moof`` + ``mdat`` whose ``tfdt`` is the part's place on the grid."""
    folder, final = packaged
    for r in final.renditions:
        init = parse_boxes((folder / r.id / r.init_name).read_bytes())
        assert find(init, b"mdhd")[0].timescale == LIVE_RATE_HZ
        for s in r.segments:
            start = s.start_ticks
            for p in s.parts:
                boxes = parse_boxes((folder / r.id / p.name(s.number)).read_bytes())
                kinds = [b.type for b in boxes]
                assert kinds == ([b"styp"] if p.index == 0 else []) + [b"moof", b"mdat"]
                (tfdt,) = find(boxes, b"tfdt")
                assert tfdt.baseMediaDecodeTime == start
                (trun,) = find(boxes, b"trun")
                assert trun.sample_count * r.frame_ticks == p.duration_ticks
                start += p.duration_ticks
            segment = parse_boxes((folder / r.id / s.name).read_bytes())
            assert [b.type for b in segment].count(b"styp") == 1


def test_the_stream_decodes_gapless_and_in_time(
    packaged: tuple[Path, LivePresentation], source: Path
) -> None:
    """init + segments, decoded by FFmpeg: every part's samples, and tick t of the
    timeline is the source's sample t (no priming shift): the decoded tone lines up
    with the source resampled to 48 kHz at lag 0."""
    folder, final = packaged
    reference = _source_at_48k(source)[0]
    for r in final.renditions:
        decoded = decode(stream_bytes(folder, r))
        total = sum(s.duration_ticks for s in r.segments)
        assert decoded.shape[1] == total
        n = min(reference.size, decoded.shape[1])
        window = slice(LIVE_RATE_HZ, n - LIVE_RATE_HZ)  # away from the first frame
        lags = range(-64, 65)
        errors = [
            float(np.mean(np.abs(decoded[0, window] - np.roll(reference[:n], lag)[window])))
            for lag in lags
        ]
        best = lags[int(np.argmin(errors))]
        assert best == 0, (r.id, best)
        assert min(errors) < 0.05, (r.id, min(errors))


def test_the_window_drops_old_segments_and_their_files(source: Path, tmp_path: Path) -> None:
    clock = FakeClock()
    final = run_live(
        LiveInput(str(source)),
        tmp_path,
        "w",
        LiveOptions(LIVE_LADDER, window_s=3.0),
        clock=clock,
    )
    for r in final.renditions:
        assert [s.number for s in r.segments] == [2, 3, 4]
        assert not list((tmp_path / "w" / r.id).glob("seg-00001*"))
        assert (tmp_path / "w" / r.id / "seg-00002.m4s").is_file()


def test_an_input_that_is_not_media_fails_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"not audio at all" * 100)
    with pytest.raises(InputError, match="no audio"):
        run_live(LiveInput(str(junk)), tmp_path, "j", LiveOptions(LIVE_LADDER), clock=FakeClock())


def test_the_command_end_to_end(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    status = main(
        ["live", str(source), "--out", str(out), "--track-id", "radio", "--max-duration", "4", "-q"]
    )
    assert status == 0
    final = live_from_json((out / "radio" / LIVE_STATE_NAME).read_text())
    assert final.ended
    for r in final.renditions:
        total = sum(s.duration_ticks for s in r.segments)
        assert 0 <= total - 4 * LIVE_RATE_HZ < r.frame_ticks
    assert json.loads((out / "radio" / LIVE_STATE_NAME).read_text())["ended"] is True


def test_the_command_refuses_a_bad_s3_output(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """S3 output itself works (tests/packager/test_live_s3.py); an unusable URL is a
    usage error before anything is encoded."""
    assert main(["live", str(source), "--out", "s3://b/live"]) == 2
    assert "s3://" in capsys.readouterr().err


def test_loop_restarts_the_file_on_one_timeline(source: Path, tmp_path: Path) -> None:
    options = LiveOptions(LIVE_LADDER, max_duration_s=SOURCE_S + 3)
    final = run_live(LiveInput(str(source), loop=True), tmp_path, "l", options, clock=FakeClock())
    for r in final.renditions:
        assert not any(s.discontinuity or s.gap for s in r.segments)
        total = sum(s.duration_ticks for s in r.segments)
        assert 0 <= total - (SOURCE_S + 3) * LIVE_RATE_HZ < r.frame_ticks
        assert decode(stream_bytes(tmp_path / "l", r)).shape[1] == total


def test_a_rate_and_layout_change_in_the_input(tmp_path: Path) -> None:
    """An MPEG-TS stream that goes from 44.1 kHz stereo to 48 kHz mono: the reader
    reports it, the ingest goes on with new inits after a discontinuity."""
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    write_audio(first, synthesize(3.0, 44100, 2), 44100, codec="mp2", container="mpegts")
    write_audio(second, synthesize(3.0, 48000, 1), 48000, codec="mp2", container="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    final = run_live(
        LiveInput(str(joined)), tmp_path, "c", LiveOptions(LIVE_LADDER), clock=FakeClock()
    )
    for r in final.renditions:
        changed = [s for s in r.segments if s.discontinuity]
        assert len(changed) == 1
        assert changed[0].init == 1 and r.segments[0].init == 0
        assert 2.5 * LIVE_RATE_HZ <= changed[0].start_ticks <= 3.5 * LIVE_RATE_HZ
        assert (tmp_path / "c" / r.id / "init-1.mp4").is_file()
        total = sum(s.duration_ticks for s in r.segments)
        assert abs(total - 6 * LIVE_RATE_HZ) < 0.2 * LIVE_RATE_HZ
