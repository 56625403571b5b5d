"""Bad input gets a specific error that names the file, and leaves nothing behind."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cadenza.manifests.ladder import PRESETS
from cadenza.packager.track import PackageOptions, TrackResult, package_track
from cadenza.store.atomic import TMP_PREFIX
from samples.make_sample import synthesize, write_audio
from tests.conftest import MakeInput

LOSSY = PackageOptions(ladder=PRESETS["lossy"])
DATA = Path(__file__).resolve().parent.parent / "data" / "media"


def _fail(source: Path, out: Path) -> TrackResult:
    out.mkdir(exist_ok=True)
    result = package_track(source, out, LOSSY)
    assert result.status == "failed"
    assert result.error is not None and str(source) in result.error
    assert sorted(p.name for p in out.iterdir()) == []  # nothing half-written
    return result


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in str(_fail(tmp_path / "nope.flac", tmp_path / "out").error)


def test_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "empty.wav"
    source.write_bytes(b"")
    assert "empty" in str(_fail(source, tmp_path / "out").error)


def test_random_bytes(tmp_path: Path) -> None:
    source = tmp_path / "noise.bin"
    source.write_bytes(np.random.default_rng(1).integers(0, 256, 65536, dtype=np.uint8).tobytes())
    error = str(_fail(source, tmp_path / "out").error)
    assert "invalid data" in error or "no audio" in error


def test_text_file_named_mp3(tmp_path: Path) -> None:
    source = tmp_path / "notes.mp3"
    source.write_text("These are my notes, not an MP3.\n" * 50, encoding="utf-8")
    error = str(_fail(source, tmp_path / "out").error)
    assert "invalid data" in error or "no audio" in error or "no audio samples" in error


def test_a_stream_of_a_codec_ffmpeg_does_not_know(tmp_path: Path) -> None:
    """A mutated MP3 (found by tests/packager/test_fuzz_media.py) whose audio stream
    names a codec FFmpeg does not know: PyAV gives it no codec context, and the
    packager crashed reading its sample rate.  Refused by name instead."""
    source = tmp_path / "mutant.mp3"
    source.write_bytes((DATA / "unknown-codec.mp3").read_bytes())
    assert "codec is one FFmpeg cannot decode" in str(_fail(source, tmp_path / "out").error)


def test_directory_as_input(tmp_path: Path) -> None:
    (tmp_path / "album.flac").mkdir()
    assert "directory" in str(_fail(tmp_path / "album.flac", tmp_path / "out").error)


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
    assert "no audio stream (streams found: video)" in str(_fail(source, tmp_path / "out").error)


@pytest.mark.parametrize("rate_hz", [4000, 384000])
def test_unsupported_sample_rate(tmp_path: Path, rate_hz: int) -> None:
    source = tmp_path / f"odd-{rate_hz}.wav"
    write_audio(
        source, synthesize(0.5, rate_hz, 1), rate_hz, codec="pcm_s16le", sample_format="s16"
    )
    assert f"unsupported sample rate {rate_hz} Hz" in str(_fail(source, tmp_path / "out").error)


def test_truncated_flac_packages_what_decodes_and_says_so(
    make_input: MakeInput, tmp_path: Path
) -> None:
    whole = make_input("flac", 44100, 2, 6.0)
    source = tmp_path / "cut.flac"
    data = whole.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    result = package_track(source, out, LOSSY)
    assert result.status == "packaged"
    assert any("truncated" in w for w in result.warnings)
    assert result.duration_s is not None and 1.0 < result.duration_s < 5.0


def test_video_file_packages_its_audio(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    rate = 48000
    audio = synthesize(1.0, rate, 2)
    with av.open(str(source), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "stereo"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for offset in range(0, audio.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[:, offset : offset + 1024]),
                format="fltp",
                layout="stereo",
            )
            chunk.sample_rate = rate
            chunk.pts = offset
            for packet in sound.encode(chunk):
                container.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode(None):
                container.mux(packet)
    out = tmp_path / "out"
    out.mkdir()
    result = package_track(source, out, LOSSY)
    assert result.status == "packaged", result.error


def test_encoder_failure_leaves_no_partial_track(
    make_input: MakeInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after some segments were written removes the working folder."""
    from cadenza.packager import encode
    from cadenza.packager.errors import EncodeError

    def broken_finish(self: encode.RungEncoder) -> object:
        raise EncodeError(self.plan.rendition_id, "simulated failure")

    monkeypatch.setattr(encode.RungEncoder, "finish", broken_finish)
    out = tmp_path / "out"
    out.mkdir()
    result = package_track(make_input("flac", 44100, 2, 5.0), out, LOSSY)
    assert result.status == "failed" and "simulated failure" in str(result.error)
    assert [p.name for p in out.iterdir() if p.name.startswith(TMP_PREFIX) or p.is_dir()] == []


def test_segment_duration_is_respected(make_input: MakeInput, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    options = PackageOptions(ladder=PRESETS["lossy"], segment_duration=Fraction(2))
    result = package_track(make_input("flac", 48000, 2, 5.0), out, options)
    assert result.status == "packaged"
    playlist = (out / result.track_id / "aac-64k" / "playlist.m3u8").read_text()
    assert "#EXT-X-TARGETDURATION:2" in playlist


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_output_is_reported(make_input: MakeInput, tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    result = package_track(make_input("flac", 44100, 2, 1.0), out, LOSSY)
    assert result.status == "failed" and "permission denied" in str(result.error)


def test_a_fragment_of_a_few_samples_is_refused_by_length(tmp_path: Path) -> None:
    """Found by the media fuzzer: 10 samples vanished into the Opus rung's resampler
    and the error blamed the encoder; now the input is refused for what it is."""
    source = tmp_path / "blip.wav"
    write_audio(source, synthesize(10 / 44100, 44100, 2), 44100, codec="pcm_s16le",
                sample_format="s16")  # fmt: skip
    assert "at least 10 ms" in str(_fail(source, tmp_path / "out").error)
