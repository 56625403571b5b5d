"""Segments and init segments built alone, against the batch packager's files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import PRESETS, Ladder, Rung
from cadenza.manifests.model import Codec, Presentation
from cadenza.packager.jit import cut
from cadenza.packager.jit.cut import build_init, build_segment
from cadenza.packager.jit.errors import SegmentNumberError, UnknownRenditionError
from cadenza.packager.jit.plan import JitSource, plan_presentation, probe_source, rung_plan
from cadenza.packager.mp4read import find_boxes
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import synthesize, write_audio


def _package(
    folder: Path,
    samples: npt.NDArray[np.float32],
    rate: int,
    ladder: Ladder,
    segment_s: int,
    fmt: str = "s16",
) -> tuple[Path, Presentation, JitSource, Presentation]:
    source = folder / "source.flac"
    write_audio(source, samples, rate, codec="flac", sample_format=fmt)
    out = folder / "out"
    out.mkdir()
    options = PackageOptions(ladder=ladder, segment_duration=Fraction(segment_s))
    result = package_track(source, out, options)
    assert result.status == "packaged", result.error
    track = out / result.track_id
    batch = presentation_from_json((track / "presentation.json").read_bytes())
    jit = probe_source(source)
    plan, _ = plan_presentation(
        jit,
        track_id=batch.track_id,
        ladder=ladder,
        segment_duration=Fraction(segment_s),
        fingerprint=None,
    )
    return track, batch, jit, plan


@pytest.mark.parametrize(
    ("rate", "channels", "ticks", "fmt", "segment_s"),
    [
        (44100, 2, 44100 * 3 + 1234, "s16", 1),  # a short last block
        (44100, 1, 4608 * 40, "s16", 2),  # ends on a block boundary
        (96000, 2, 96000 * 3 + 7, "s32", 1),  # 24-bit, 8192-sample blocks
        (48000, 6, 48000 * 3 - 5, "s16", 1),
    ],
)
def test_flac_segments_are_byte_identical_to_the_batch_packagers(
    tmp_path: Path, rate: int, channels: int, ticks: int, fmt: str, segment_s: int
) -> None:
    samples = synthesize(ticks / rate, rate, channels)
    track, batch, jit, plan = _package(tmp_path, samples, rate, PRESETS["lossless"], segment_s, fmt)
    rendition = batch.renditions[0]
    assert len(rendition.segments) >= 3
    for segment in reversed(rendition.segments):
        built = build_segment(jit, plan, rendition.id, segment.number)
        assert built == (track / rendition.id / rendition.segment_name(segment)).read_bytes()


def _streaminfo(init: bytes) -> bytes:
    dfla = find_boxes(init, "moov/trak/mdia/minf/stbl/stsd")[0]
    at = dfla.payload.index(b"dfLa")
    return dfla.payload[at + 12 : at + 12 + 34]


def test_flac_init_states_the_exact_sample_count_and_an_unknown_md5(tmp_path: Path) -> None:
    samples = synthesize(2.5, 44100, 2)
    track, _, jit, plan = _package(tmp_path, samples, 44100, PRESETS["lossless"], 1)
    mine = _streaminfo(build_init(jit, plan, "flac"))
    theirs = _streaminfo((track / "flac" / "init.mp4").read_bytes())
    assert int.from_bytes(mine[10:18], "big") & ((1 << 36) - 1) == samples.shape[1]
    assert mine[18:34] == bytes(16) != theirs[18:34]  # MD5: unknown
    assert mine[4:10] == bytes(6)  # frame sizes: unknown
    assert (mine[:4], mine[10:18]) == (theirs[:4], theirs[10:18])  # blocks, rate, count


def _fragment(data: bytes) -> tuple[int, int, int]:
    """(sequence number, base decode time, sample count) of a media segment."""
    mfhd = find_boxes(data, "moof/mfhd")[0].payload
    tfdt = find_boxes(data, "moof/traf/tfdt")[0].payload
    trun = find_boxes(data, "moof/traf/trun")[0].payload
    return (
        int.from_bytes(mfhd[4:8], "big"),
        int.from_bytes(tfdt[4:12], "big"),
        int.from_bytes(trun[4:8], "big"),
    )


def test_lossy_segments_have_the_batch_segments_number_time_and_frames(tmp_path: Path) -> None:
    ladder = Ladder("t", (Rung(Codec.AAC, 128_000), Rung(Codec.OPUS, 64_000)))
    track, batch, jit, plan = _package(tmp_path, synthesize(3.3, 44100, 2), 44100, ladder, 1)
    for rendition in batch.renditions:
        for segment in rendition.segments:
            built = build_segment(jit, plan, rendition.id, segment.number)
            real = (track / rendition.id / rendition.segment_name(segment)).read_bytes()
            assert _fragment(built) == _fragment(real)


def test_group_inits_are_shared_and_carry_the_edit_list(tmp_path: Path) -> None:
    ladder = Ladder("t", (Rung(Codec.AAC, 64_000), Rung(Codec.AAC, 128_000)))
    track, _, jit, plan = _package(tmp_path, synthesize(2.0, 44100, 2), 44100, ladder, 1)
    low, high = (build_init(jit, plan, r.id) for r in plan.renditions)
    assert low == high
    elst = find_boxes(low, "moov/trak/edts/elst")[0]
    theirs = find_boxes((track / "aac-64k" / "init.mp4").read_bytes(), "moov/trak/edts/elst")[0]
    assert elst == theirs  # priming and duration, exactly


def test_segment_numbers_outside_the_rendition_are_refused(tmp_path: Path) -> None:
    ladder = Ladder("t", (Rung(Codec.AAC, 64_000),))
    _, _, jit, plan = _package(tmp_path, synthesize(1.5, 44100, 2), 44100, ladder, 1)
    count = len(plan.renditions[0].segments)
    for number in (0, count + 1):
        with pytest.raises(SegmentNumberError) as caught:
            build_segment(jit, plan, "aac-64k", number)
        assert (caught.value.number, caught.value.count) == (number, count)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(UnknownRenditionError):
        build_segment(jit, plan, "aac-999k", 1)


def _hard(kind: str, rate: int, channels: int, seconds: float) -> npt.NDArray[np.float32]:
    n = round(rate * seconds)
    rng = np.random.default_rng(5)
    t = np.arange(n) / rate
    if kind == "noise":
        x = rng.uniform(-1, 1, (channels, n))
    elif kind == "sweep":
        phase = 2 * np.pi * np.cumsum(20 * (rate / 2 / 20) ** (t / t[-1])) / rate
        x = np.stack([np.sin(phase + c) for c in range(channels)])
    elif kind == "clicks":
        x = rng.uniform(-1, 1, (channels, n)) * (np.sin(2 * np.pi * 0.5 * t) > 0.3)
        x[:, :: rate // 7] = 1.0
    elif kind == "silence":
        x = np.zeros((channels, n))
    else:
        x = synthesize(seconds, rate, channels).astype(np.float64)
    return np.clip(x, -1, 1).astype(np.float32)


@pytest.mark.parametrize("kind", ["noise", "sweep", "clicks", "silence", "music"])
@pytest.mark.parametrize(
    ("rate", "channels", "rungs"),
    [
        (44100, 2, PRESETS["music"].rungs),
        (44100, 1, (Rung(Codec.AAC, 32_000), Rung(Codec.OPUS, 24_000))),
        (48000, 6, (Rung(Codec.AAC, 64_000), Rung(Codec.OPUS, 24_000))),
    ],
)
def test_built_segments_stay_under_the_declared_peak(
    tmp_path: Path, kind: str, rate: int, channels: int, rungs: tuple[Rung, ...]
) -> None:
    """BANDWIDTH is a safe upper bound of every segment built, on hard inputs."""
    source = tmp_path / "hard.flac"
    write_audio(source, _hard(kind, rate, channels, 2.3), rate, codec="flac", sample_format="s16")
    jit = probe_source(source)
    plan, _ = plan_presentation(
        jit, track_id="t", ladder=Ladder("t", rungs), segment_duration=Fraction(1), fingerprint=None
    )
    for rendition in plan.renditions:
        for segment in rendition.segments:
            size = len(build_segment(jit, plan, rendition.id, segment.number))
            bps = size * 8 * rendition.timescale / segment.duration_ticks
            assert bps <= rendition.peak_bitrate_bps, (rendition.id, segment.number, bps)


def test_flac_segments_from_a_wav_source_are_byte_identical(tmp_path: Path) -> None:
    source = tmp_path / "pcm.wav"
    write_audio(source, synthesize(3.5, 44100, 2), 44100, codec="pcm_s16le", sample_format="s16")
    out = tmp_path / "out"
    out.mkdir()
    result = package_track(
        source, out, PackageOptions(ladder=PRESETS["lossless"], segment_duration=Fraction(1))
    )
    assert result.status == "packaged", result.error
    batch = presentation_from_json((out / result.track_id / "presentation.json").read_bytes())
    jit = probe_source(source)
    plan, _ = plan_presentation(
        jit,
        track_id=batch.track_id,
        ladder=PRESETS["lossless"],
        segment_duration=Fraction(1),
        fingerprint=None,
    )
    rendition = batch.renditions[0]
    for segment in rendition.segments:
        built = build_segment(jit, plan, "flac", segment.number)
        assert (
            built == (out / result.track_id / "flac" / rendition.segment_name(segment)).read_bytes()
        )


def test_segments_built_on_threads_are_the_segments_built_in_turn(tmp_path: Path) -> None:
    """Thread-safe, and deterministic: the serving layer builds segments in a pool."""
    ladder = Ladder("t", (Rung(Codec.AAC, 128_000), Rung(Codec.OPUS, 64_000), Rung(Codec.FLAC)))
    source = tmp_path / "source.flac"
    write_audio(source, synthesize(3.2, 44100, 2), 44100, codec="flac", sample_format="s16")
    jit = probe_source(source)
    plan, _ = plan_presentation(
        jit, track_id="t", ladder=ladder, segment_duration=Fraction(1), fingerprint=None
    )
    jobs = [(r.id, s.number) for r in plan.renditions for s in r.segments]
    in_turn = [build_segment(jit, plan, rid, n) for rid, n in jobs]
    with ThreadPoolExecutor(4) as pool:
        on_threads = list(pool.map(lambda job: build_segment(jit, plan, *job), jobs))
    assert on_threads == in_turn


@pytest.mark.parametrize("rate", [44100, 96000, 22050, 32000])
def test_a_resampled_window_is_the_batch_resamplers_output_exactly(
    tmp_path: Path, rate: int
) -> None:
    """The encoder input of any window, resampled from a rate period before it, is the
    whole-track resampler's output sample for sample (Opus at 48 kHz)."""
    source = tmp_path / "source.flac"
    write_audio(source, synthesize(2.0, rate, 2), rate, codec="flac", sample_format="s16")
    jit = probe_source(source)
    plan, _ = plan_presentation(
        jit,
        track_id="t",
        ladder=Ladder("t", (Rung(Codec.OPUS, 64_000),)),
        segment_duration=Fraction(1),
        fingerprint=None,
    )
    rendition = plan.renditions[0]
    whole = cut._rung_input(jit, rung_plan(plan, rendition), rendition, 0, rendition.duration_ticks)
    assert whole.samples == rendition.duration_ticks
    reference = whole.to_ndarray()
    for start, end in (
        (0, 960),
        (960 * 7, 960 * 40),
        (960 * 50, rendition.duration_ticks),
        (12345, 23456),
    ):
        window = cut._rung_input(
            jit, rung_plan(plan, rendition), rendition, start, end
        ).to_ndarray()
        assert np.array_equal(window, reference[:, start * 2 : end * 2]), (start, end)
