"""Just-in-time plans against the batch packager: real sources packaged both ways.

For the same source, ladder and segment duration, the manifests planned from a probe
(:func:`cadenza.packager.jit.plan.plan_presentation`) must equal the batch packager's
byte for byte, except the measured fields; every timing must be exact.  Lengths are
chosen around codec-frame and segment boundaries of each codec, at the source's rate
and resampled (Opus at 48 kHz from 44.1, 22.05 and 96 kHz), mono, stereo and 5.1.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec, Presentation, Rendition
from cadenza.packager.errors import InputError
from cadenza.packager.jit.plan import plan_presentation, probe_source, track_files
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import synthesize, write_audio

# One rung of each codec (a few more for 5.1, which adds stereo downmix rungs).
LADDER = Ladder(
    "jit-test",
    (Rung(Codec.AAC, 64_000), Rung(Codec.AAC, 128_000), Rung(Codec.OPUS, 64_000), Rung(Codec.FLAC)),
)
SEGMENT_S = Fraction(1)

# (rate, channels, samples): AAC frames of 1024 with 1024 priming; at 1 s a segment
# is 43 AAC frames (44032 ticks at 44.1 kHz) or 47 (48128 at 48 kHz); Opus 960 with
# 312 pre-skip, 50 frames a segment; FLAC blocks of 4608 at 44.1/48 kHz, 10 a segment.
CASES = [
    (44100, 2, 441),  # 10 ms: the shortest track
    (44100, 2, 1023),
    (44100, 2, 1024),
    (44100, 2, 1025),
    (44100, 2, 4608),
    (44100, 2, 4609),
    (44100, 2, 43008 - 1),  # AAC: the last frame of the first segment, +-1
    (44100, 2, 43008),
    (44100, 2, 43008 + 1),
    (44100, 2, 46080),  # FLAC: exactly one segment
    (44100, 2, 46081),
    (44100, 2, 44100 * 2 + 777),
    (44100, 1, 88200 + 11),
    (48000, 2, 48000 - 312),  # Opus: priming + input fill 50 frames exactly
    (48000, 2, 48000 - 311),
    (48000, 2, 47 * 1024 * 2 - 1024),
    (22050, 1, 22050 * 2 + 5),
    (96000, 2, 96000 * 2 + 3),
    (48000, 6, 48000 * 2 + 100),
]


def _source(folder: Path, rate: int, channels: int, ticks: int) -> Path:
    path = folder / f"src-{rate}-{channels}-{ticks}.flac"
    samples = synthesize(ticks / rate, rate, channels)
    assert samples.shape[1] == ticks
    write_audio(path, samples, rate, codec="flac", sample_format="s16")
    return path


def _batch(source: Path, out: Path) -> tuple[Path, Presentation]:
    out.mkdir(exist_ok=True)
    result = package_track(source, out, PackageOptions(ladder=LADDER, segment_duration=SEGMENT_S))
    assert result.status == "packaged", result.error
    folder = out / result.track_id
    return folder, presentation_from_json((folder / "presentation.json").read_bytes())


_MEASURED = [
    (re.compile(rb"BANDWIDTH=\d+"), b"BANDWIDTH=_"),  # HLS BANDWIDTH and AVERAGE-BANDWIDTH
    (re.compile(rb'bandwidth="\d+"'), b'bandwidth="_"'),  # MPD Representation@bandwidth
    (re.compile(rb".*com\.cadenza\.loudness\..*\n"), b""),  # HLS loudness session data
    (re.compile(rb".*urn:cadenza:loudness:2026.*\n"), b""),  # MPD loudness property
]


def _without_measured(text: bytes) -> bytes:
    for pattern, replacement in _MEASURED:
        text = pattern.sub(replacement, text)
    return text


def _timing(rendition: Rendition) -> tuple[object, ...]:
    """Everything of a rendition but its measured fields."""
    measured = {"average_bitrate_bps", "peak_bitrate_bps", "segments", "loudness"}
    if rendition.codec is Codec.FLAC:
        measured.add("decoder_config")  # STREAMINFO's MD5 and frame sizes
    fields = tuple(
        getattr(rendition, f.name) for f in dataclasses.fields(rendition) if f.name not in measured
    )
    segments = tuple((s.number, s.start_ticks, s.duration_ticks) for s in rendition.segments)
    return (*fields, segments)


@pytest.mark.parametrize(("rate", "channels", "ticks"), CASES)
def test_plan_matches_the_batch_packager(
    tmp_path: Path, rate: int, channels: int, ticks: int
) -> None:
    source = _source(tmp_path, rate, channels, ticks)
    folder, batch = _batch(source, tmp_path / "out")
    jit = probe_source(source)
    assert jit.total_ticks == batch.duration_ticks == ticks
    assert jit.seekable
    planned, _ = plan_presentation(
        jit,
        track_id=batch.track_id,
        ladder=LADDER,
        segment_duration=SEGMENT_S,
        fingerprint=batch.fingerprint,
    )
    assert [r.id for r in planned.renditions] == [r.id for r in batch.renditions]
    for mine, theirs in zip(planned.renditions, batch.renditions, strict=True):
        assert _timing(mine) == _timing(theirs), mine.id
    assert planned.groups == batch.groups
    top = ("track_id", "timescale", "duration_ticks", "source", "target_segment_duration_ticks")
    for name in (*top, "metadata", "fingerprint"):
        assert getattr(planned, name) == getattr(batch, name), name
    files = track_files(planned)
    written = {str(p.relative_to(folder)) for p in folder.rglob("*.m3u8")}
    written |= {"manifest.mpd", "presentation.json"}
    assert set(files) == written
    for name, data in files.items():
        real = (folder / name).read_bytes()
        if name.endswith("m3u8") and "/" in name:
            assert data == real, name  # media playlists hold no measured field
        elif name != "presentation.json":
            assert _without_measured(data) == _without_measured(real), name


def test_track_files_are_what_write_manifests_writes(tmp_path: Path) -> None:
    """presentation.json too: the planned model, rendered as the packager renders it."""
    source = _source(tmp_path, 44100, 2, 30000)
    planned, _ = plan_presentation(
        probe_source(source),
        track_id="t",
        ladder=LADDER,
        segment_duration=SEGMENT_S,
        fingerprint=None,
    )
    from cadenza.packager.publish import write_manifests

    for rendition in planned.renditions:
        (tmp_path / "w" / rendition.id).mkdir(parents=True)
    write_manifests(tmp_path / "w", planned)
    for name, data in track_files(planned).items():
        assert (tmp_path / "w" / name).read_bytes() == data, name
    assert presentation_from_json(track_files(planned)["presentation.json"]) == planned


def test_estimates_are_marked_unmeasured_and_bounded(tmp_path: Path) -> None:
    source = _source(tmp_path, 44100, 2, 100_000)
    planned, _ = plan_presentation(
        probe_source(source),
        track_id="t",
        ladder=LADDER,
        segment_duration=SEGMENT_S,
        fingerprint=None,
    )
    assert planned.loudness is None
    for rendition in planned.renditions:
        assert rendition.loudness is None
        assert rendition.peak_bitrate_bps > rendition.average_bitrate_bps > 0
        if rendition.target_bitrate_bps is not None:
            assert rendition.peak_bitrate_bps >= rendition.target_bitrate_bps


def test_probe_does_not_decode_a_flac_whole(tmp_path: Path) -> None:
    """A FLAC whose middle is garbage probes fine: only its header and last frame are read."""
    source = _source(tmp_path, 44100, 2, 44100 * 20)
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 50_000] = bytes(50_000)
    source.write_bytes(bytes(data))
    jit = probe_source(source)
    assert (jit.total_ticks, jit.seekable) == (44100 * 20, True)


def test_a_truncated_flac_is_refused_with_its_reason(tmp_path: Path) -> None:
    source = _source(tmp_path, 44100, 2, 44100 * 5)
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        probe_source(source)


def test_a_corrupt_source_is_refused_as_the_batch_packager_refuses_it(tmp_path: Path) -> None:
    source = tmp_path / "noise.flac"
    source.write_bytes(np.random.default_rng(1).bytes(10_000))
    with pytest.raises(InputError) as caught:
        probe_source(source)
    assert caught.value.path == str(source)


def test_a_source_without_sample_positions_is_decoded_once_to_count(tmp_path: Path) -> None:
    source = tmp_path / "lossy.mp3"
    write_audio(source, synthesize(1.5, 44100, 2), 44100, codec="libmp3lame", sample_format="fltp")
    _, batch = _batch(source, tmp_path / "out")
    jit = probe_source(source)
    assert not jit.seekable
    assert jit.total_ticks == batch.duration_ticks
    planned, _ = plan_presentation(
        jit,
        track_id=batch.track_id,
        ladder=LADDER,
        segment_duration=SEGMENT_S,
        fingerprint=batch.fingerprint,
    )
    for mine, theirs in zip(planned.renditions, batch.renditions, strict=True):
        assert _timing(mine) == _timing(theirs), mine.id


def test_a_wav_source_is_probed_by_seeking_and_planned_exactly(tmp_path: Path) -> None:
    source = tmp_path / "pcm.wav"
    write_audio(source, synthesize(2.7, 48000, 2), 48000, codec="pcm_s16le", sample_format="s16")
    _, batch = _batch(source, tmp_path / "out")
    jit = probe_source(source)
    assert (jit.seekable, jit.total_ticks) == (True, batch.duration_ticks)
    planned, _ = plan_presentation(
        jit,
        track_id=batch.track_id,
        ladder=LADDER,
        segment_duration=SEGMENT_S,
        fingerprint=batch.fingerprint,
    )
    for mine, theirs in zip(planned.renditions, batch.renditions, strict=True):
        assert _timing(mine) == _timing(theirs), mine.id
