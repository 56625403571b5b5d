"""What the packager reads from a source, and what it makes of it: tags into
metadata, a ladder fitted to the source (5.1 scaled plus stereo downmixes, nothing
above a low-rate source's rate or bitrate), and damaged files named as damaged.
Inputs are written with PyAV here."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.stream import AudioStream

from cadenza.cli import main
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import PRESETS, Ladder, Rung
from cadenza.manifests.model import Codec, Presentation
from cadenza.packager.decode import Decoder
from cadenza.packager.downmix import StereoDownmix, downmix_matrix
from cadenza.packager.ladder import SourceShape, fit_ladder
from cadenza.packager.track import PackageOptions, TrackResult, package_track
from samples.make_sample import LAYOUTS, synthesize, write_audio

MUSIC = PackageOptions(ladder=PRESETS["music"])
LOSSY = PackageOptions(ladder=PRESETS["lossy"])


def _write(
    path: Path,
    samples: npt.NDArray[np.float32],
    rate_hz: int,
    *,
    codec: str = "flac",
    tags: dict[str, str] | None = None,
    stream_tags: dict[str, str] | None = None,
) -> Path:
    """Like samples.make_sample.write_audio, with container and stream tags."""
    channels = samples.shape[0]
    with av.open(str(path), "w") as out:
        out.metadata.update(tags or {})
        stream = out.add_stream(codec, rate=rate_hz)
        assert isinstance(stream, AudioStream)
        stream.layout = LAYOUTS[channels]
        stream.metadata.update(stream_tags or {})
        stream.time_base = Fraction(1, rate_hz)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp", layout=LAYOUTS[channels]
        )
        frame.sample_rate = rate_hz
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def _packaged(source: Path, out: Path, options: PackageOptions) -> tuple[TrackResult, Presentation]:
    out.mkdir(exist_ok=True)
    result = package_track(source, out, options)
    assert result.status == "packaged", result.error
    text = (out / result.track_id / "presentation.json").read_text()
    return result, presentation_from_json(text)


# -- metadata ----------------------------------------------------------------


def test_flac_tags_reach_presentation_json_and_the_master_playlist(tmp_path: Path) -> None:
    tags = {
        "TITLE": "Tone\x07 One",
        "ARTIST": "Cadenza Band",
        "ALBUM": "x" * 5000,
        "ISRC": "USRC17607839",
        "REPLAYGAIN_TRACK_GAIN": "-6.20 dB",
        "REPLAYGAIN_TRACK_PEAK": "0.988",
        "WEIRD_TAG": "dropped",
    }
    source = _write(tmp_path / "tagged.flac", synthesize(1.0, 44100, 2), 44100, tags=tags)
    _, presentation = _packaged(source, tmp_path / "out", PackageOptions(PRESETS["lossless"]))
    metadata = dict(presentation.metadata)
    assert metadata["title"] == "Tone One"
    assert metadata["artist"] == "Cadenza Band"
    assert metadata["album"] == "x" * 256
    assert metadata["isrc"] == "USRC17607839"
    assert metadata["replaygain_track_gain_db"] == "-6.20"
    assert metadata["replaygain_track_peak"] == "0.988000"
    assert "weird_tag" not in json.dumps(presentation.metadata).lower()
    master = (tmp_path / "out" / "tagged" / "master.m3u8").read_text()
    assert '#EXT-X-SESSION-DATA:DATA-ID="com.cadenza.isrc",VALUE="USRC17607839"' in master


def test_stream_tags_are_read_too(tmp_path: Path) -> None:
    """Ogg keeps its comments on the stream, not on the container."""
    source = _write(
        tmp_path / "speech.ogg",
        synthesize(0.5, 48000, 1),
        48000,
        codec="libopus",
        stream_tags={"title": "Spoken", "artist": "Someone"},
    )
    with Decoder(source) as decoder:
        assert dict(decoder.probe.tags) == {"title": "Spoken", "artist": "Someone"}


# -- source-aware ladders ------------------------------------------------------


def test_a_51_source_gets_scaled_surround_rungs_and_stereo_downmixes() -> None:
    fitted, warnings = fit_ladder(PRESETS["music"], SourceShape(48000, 6))
    by_id = {r.rendition_id: r for r in fitted}
    assert [r.rendition_id for r in fitted] == [
        "aac-160k-6ch", "aac-320k-6ch", "aac-512k-6ch", "opus-160k-6ch", "opus-320k-6ch",
        "flac", "aac-64k-2ch", "aac-128k-2ch", "aac-256k-2ch", "aac-320k-2ch",
        "opus-64k-2ch", "opus-128k-2ch",
    ]  # fmt: skip
    assert by_id["aac-320k-6ch"].bitrate_bps == 320_000 and by_id["aac-320k-6ch"].channels == 6
    assert by_id["aac-64k-2ch"].channels == 2 and by_id["aac-64k-2ch"].downmix
    assert by_id["flac"].channels == 6
    # 256 and 320 kb/s both scale past AAC's 512 kb/s: one rung, and a warning.
    assert any("aac-320k" in w and "same as a rung" in w for w in warnings)


def test_an_8khz_source_gets_no_rung_above_what_it_carries() -> None:
    """8 kHz mono: AAC and FLAC at 8 kHz (Opus is 48 kHz by format), nothing above
    AAC's 48 kb/s ceiling at 8 kHz; each codec keeps its lowest rung, lowered."""
    fitted, warnings = fit_ladder(PRESETS["music"], SourceShape(8000, 1))
    assert {(r.rendition_id, r.sample_rate_hz, r.bitrate_bps) for r in fitted} == {
        ("aac-48k", 8000, 48_000),
        ("opus-48k", 48000, 48_000),
        ("flac", 8000, None),
    }
    assert sum(w.startswith("rung skipped") for w in warnings) == 4
    assert sum(w.startswith("rung lowered") for w in warnings) == 2
    assert any("aac-256k" in w and "48 kb/s" in w for w in warnings)


def test_a_lossy_source_caps_the_ladder_at_its_own_bitrate() -> None:
    fitted, warnings = fit_ladder(PRESETS["music"], SourceShape(44100, 2, 128_000))
    assert [r.rendition_id for r in fitted] == [
        "aac-64k", "aac-128k", "opus-64k", "opus-128k", "flac"
    ]  # fmt: skip
    assert any("aac-320k" in w and "lossy source's own bitrate" in w for w in warnings)


def test_an_explicit_rate_above_the_source_is_skipped() -> None:
    ladder = Ladder("x", (Rung(Codec.AAC, 64_000, sample_rate_hz=48000), Rung(Codec.FLAC)))
    fitted, warnings = fit_ladder(ladder, SourceShape(16000, 1))
    assert [r.rendition_id for r in fitted] == ["flac"]
    assert warnings == ["rung skipped: aac-64k: 48000 Hz exceeds the source's 16000 Hz"]


def test_a_cd_source_keeps_the_whole_ladder() -> None:
    fitted, warnings = fit_ladder(PRESETS["music"], SourceShape(44100, 2))
    assert [r.rendition_id for r in fitted] == [r.id for r in PRESETS["music"].rungs]
    assert warnings == []


def test_the_downmix_follows_bs775_and_cannot_clip() -> None:
    """ITU-R BS.775: L + 0.7071 C + 0.7071 Ls, LFE dropped; rows scaled to sum 1."""
    matrix = downmix_matrix(["FL", "FR", "FC", "LFE", "BL", "BR"])
    k = math.sqrt(0.5)
    expected = np.array([[1, 0, k, 0, k, 0], [0, 1, k, 0, 0, k]]) / (1 + 2 * k)
    assert matrix == pytest.approx(expected, abs=1e-6)
    assert np.abs(matrix).sum(axis=1) == pytest.approx([1.0, 1.0])
    worst = np.sign(matrix[0])[:, None].repeat(4, axis=1).astype(np.float32)
    assert float(np.max(np.abs(StereoDownmix(["FL", "FR", "FC", "LFE", "BL", "BR"])(worst)))) <= 1.0
    # 5.1(side) mixes its side surrounds as 5.1 mixes its back ones.
    assert downmix_matrix(["FL", "FR", "FC", "LFE", "SL", "SR"]) == pytest.approx(matrix)


def test_a_51_source_packages_stereo_rungs_that_decode_as_stereo(tmp_path: Path) -> None:
    samples = np.zeros((6, 48000), dtype=np.float32)
    samples[2] = synthesize(1.0, 48000, 1)[0]  # centre only: the downmix has it in both sides
    source = _write(tmp_path / "surround.flac", samples, 48000)
    result, presentation = _packaged(source, tmp_path / "out", LOSSY)
    channels = {r.id: r.channels for r in presentation.renditions}
    assert channels["aac-64k-2ch"] == 2 and channels["aac-160k-6ch"] == 6
    assert channels["opus-128k-2ch"] == 2 and channels["opus-320k-6ch"] == 6
    folder = tmp_path / "out" / result.track_id / "aac-128k-2ch"
    data = (folder / "init.mp4").read_bytes() + b"".join(
        p.read_bytes() for p in sorted(folder.glob("seg-*.m4s"))
    )
    (tmp_path / "rung.mp4").write_bytes(data)
    with av.open(str(tmp_path / "rung.mp4")) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert decoded.shape[0] == 2
    left, right = decoded[0], decoded[1]
    assert float(np.max(np.abs(left))) > 0.05
    assert float(np.max(np.abs(left - right))) < 0.02  # the centre sits in the middle


def test_an_8khz_source_packages_without_48khz_aac_and_warns(tmp_path: Path) -> None:
    source = tmp_path / "phone.wav"
    write_audio(source, synthesize(1.0, 8000, 1), 8000, codec="pcm_s16le", sample_format="s16")
    result, presentation = _packaged(source, tmp_path / "out", MUSIC)
    for rendition in presentation.renditions:
        if rendition.codec is not Codec.OPUS:
            assert rendition.sample_rate_hz == 8000, rendition.id
        assert (rendition.target_bitrate_bps or 0) <= 48_000, rendition.id
    assert any("aac-256k" in w for w in result.warnings)


# -- damaged input -------------------------------------------------------------


def test_random_bytes_named_flac_are_corrupt_or_unsupported(tmp_path: Path) -> None:
    source = tmp_path / "random.flac"
    source.write_bytes(np.random.default_rng(3).integers(0, 256, 65536, np.uint8).tobytes())
    (tmp_path / "out").mkdir()
    result = package_track(source, tmp_path / "out", LOSSY)
    assert result.status == "failed"
    assert result.error is not None and "corrupt or unsupported" in result.error
    assert "unsupported sample rate" not in result.error and "0 Hz" not in result.error
    assert list((tmp_path / "out").iterdir()) == []


def _cut_wav(tmp_path: Path) -> Path:
    whole = tmp_path / "long.wav"
    write_audio(whole, synthesize(20.0, 44100, 2), 44100, codec="pcm_s16le", sample_format="s16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:2048])
    return cut


def test_a_wav_cut_short_of_its_header_is_packaged_with_a_warning(tmp_path: Path) -> None:
    """FFmpeg estimates a WAV's duration from the file size; the header says 20 s."""
    result, presentation = _packaged(_cut_wav(tmp_path), tmp_path / "out", LOSSY)
    assert any("truncated" in w and "20.000 s its header declares" in w for w in result.warnings), (
        result.warnings
    )
    assert presentation.duration_ticks < 44100


def test_strict_fails_a_damaged_wav_and_writes_nothing(tmp_path: Path) -> None:
    source = _cut_wav(tmp_path)
    (tmp_path / "out").mkdir()
    result = package_track(source, tmp_path / "out", PackageOptions(PRESETS["lossy"], strict=True))
    assert result.status == "failed"
    assert result.error is not None and "damaged (--strict)" in result.error
    assert str(source) in result.error
    assert list((tmp_path / "out").iterdir()) == []


def test_strict_on_the_command_line(tmp_path: Path) -> None:
    source = _cut_wav(tmp_path)
    out = tmp_path / "out"
    assert main(["package", str(source), "--out", str(out), "--ladder", "lossless"]) == 0
    assert main(["package", str(source), "--out", str(out / "strict"), "--strict"]) == 1
    report = json.loads((out / "strict" / "batch-report.json").read_text())
    assert "damaged (--strict)" in report["tracks"][0]["error"]


def test_a_whole_wav_has_no_warning(tmp_path: Path) -> None:
    source = tmp_path / "whole.wav"
    write_audio(source, synthesize(1.0, 44100, 2), 44100, codec="pcm_s16le", sample_format="s16")
    result, _ = _packaged(
        source, tmp_path / "out", PackageOptions(PRESETS["lossless"], strict=True)
    )
    assert result.warnings == []
