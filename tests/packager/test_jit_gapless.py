"""Segments built alone play gaplessly: decoded end to end with FFmpeg, against the source.

Each rendition is decoded as a player appends it (init, then every segment) with
FFmpeg's edit-list handling off, and compared with the exact input its encoder had
(the source decoded as the batch packager decodes it, downmixed and resampled the same
way).  Checked, as for the batch packager's output: the same number of decoded samples
as the batch rendition, the start sample-aligned (the lag that best matches the source
is the batch rendition's), and no discontinuity at segment joins: around every join
the signal-to-error ratio is within :data:`JOIN_MARGIN_DB` of what the batch encode
reaches there, or of the rendition's median elsewhere, whichever is lower (a segment
one frame off, or encoded without pre-roll, misses it by 20 to 40 dB).
"""

from __future__ import annotations

import random
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec, Rendition
from cadenza.packager.decode import Decoder
from cadenza.packager.downmix import StereoDownmix, is_downmix
from cadenza.packager.jit import cut
from cadenza.packager.jit.cut import build_init, build_segment
from cadenza.packager.jit.plan import JitSource, plan_presentation, probe_source
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import synthesize, write_audio

Audio = npt.NDArray[np.float64]
SEGMENT_S = Fraction(1)
JOIN_MARGIN_DB = 10.0
WINDOW_TICKS = 256
JOIN_REACH_TICKS = 2048  # a join's neighbourhood, either side
LAGS = range(0, 2048)


class Track:
    """One source packaged by the batch packager and planned just in time."""

    def __init__(self, folder: Path, ladder: Ladder, rate: int, channels: int, seconds: float):
        source = folder / f"src-{rate}-{channels}.flac"
        write_audio(
            source, synthesize(seconds, rate, channels), rate, codec="flac", sample_format="s16"
        )
        out = folder / "out"
        out.mkdir()
        result = package_track(
            source, out, PackageOptions(ladder=ladder, segment_duration=SEGMENT_S)
        )
        assert result.status == "packaged", result.error
        self.folder = out / result.track_id
        self.batch = presentation_from_json((self.folder / "presentation.json").read_bytes())
        self.source: JitSource = probe_source(source)
        self.plan, _ = plan_presentation(
            self.source,
            track_id=self.batch.track_id,
            ladder=ladder,
            segment_duration=SEGMENT_S,
            fingerprint=None,
        )

    def batch_init(self, rendition: Rendition) -> bytes:
        return (self.folder / rendition.id / rendition.init_name).read_bytes()

    def batch_segment(self, rendition: Rendition, number: int) -> bytes:
        segment = rendition.segments[number - 1]
        return (self.folder / rendition.id / rendition.segment_name(segment)).read_bytes()

    def jit_segments(self, rendition_id: str, *, shuffle: bool = True) -> list[bytes]:
        """Every segment built alone, in a shuffled order, returned in playing order."""
        numbers = [s.number for s in self.plan.rendition(rendition_id).segments]
        order = list(numbers)
        if shuffle:
            random.Random(rendition_id).shuffle(order)
        built = {n: build_segment(self.source, self.plan, rendition_id, n) for n in order}
        return [built[n] for n in numbers]


def decode(data: bytes) -> Audio:
    """Every decoded sample, planar, edit list ignored (priming and padding kept)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        with av.open(handle.name, options={"ignore_editlist": "1"}) as container:
            frames = []
            for frame in container.decode(container.streams.audio[0]):
                array: npt.NDArray[np.generic] = frame.to_ndarray()
                if not frame.format.is_planar:
                    array = array.reshape(frame.samples, -1).T
                full_scale = 1.0
                if frame.format.name.startswith(("s16", "s32")):  # FLAC decodes to integers
                    full_scale = float(1 << (frame.format.bits - 1))
                frames.append(array.astype(np.float64) / full_scale)
    return np.concatenate(frames, axis=1)


def encoder_input(track: Track, rendition: Rendition) -> Audio:
    """What the batch encoder of ``rendition`` was given: the source decoded as the batch
    packager decodes it, downmixed and resampled to the rung as it does."""
    with Decoder(track.source.path) as decoder:
        probe = decoder.probe
        samples = np.concatenate([f.to_ndarray() for f in decoder.frames()], axis=1)
    layout = probe.layout_name
    if is_downmix(rendition.channels, probe.channels):
        samples = StereoDownmix(probe.channel_names)(samples.astype(np.float32))
        layout = "stereo"
    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, np.float32), format="fltp", layout=layout
    )
    frame.sample_rate = probe.sample_rate_hz
    frame.pts = 0
    frame.time_base = Fraction(1, probe.sample_rate_hz)
    resampler = AudioResampler(format="fltp", layout=layout, rate=rendition.sample_rate_hz)
    outs = [*resampler.resample(frame), *resampler.resample(None)]
    return np.concatenate([o.to_ndarray() for o in outs], axis=1).astype(np.float64)


def best_lag(decoded: Audio, reference: Audio) -> int:
    """The offset of the decoded signal that best matches the reference."""
    probe = reference[0, 4096:24576]
    errors = [float(np.sum((decoded[0, lag + 4096 : lag + 24576] - probe) ** 2)) for lag in LAGS]
    return int(np.argmin(errors))


def join_snrs(
    rendition: Rendition, decoded: Audio, reference: Audio, lag: int
) -> tuple[list[float], float]:
    """(signal-to-error ratio around each join in dB, median ratio of all windows)."""
    played = decoded[:, lag : lag + reference.shape[1]]
    error = np.sum((played - reference) ** 2, axis=0)
    signal = float(np.mean(np.sum(reference**2, axis=0)))
    windows = (
        error[: len(error) // WINDOW_TICKS * WINDOW_TICKS].reshape(-1, WINDOW_TICKS).mean(axis=1)
    )
    windows = np.maximum(windows, 1e-20)
    joins = [s.start_ticks - rendition.encoder_delay_ticks for s in rendition.segments[1:]]
    around = [
        float(
            windows[
                max(0, (j - JOIN_REACH_TICKS) // WINDOW_TICKS) : (j + JOIN_REACH_TICKS)
                // WINDOW_TICKS
            ].max()
        )
        for j in joins
    ]
    median = float(np.median(windows))
    return [10 * np.log10(signal / e) for e in around], 10 * np.log10(signal / median)


def assert_plays_like_batch(
    track: Track, rendition_id: str, jit_data: bytes, batch_data: bytes
) -> None:
    rendition = track.plan.rendition(rendition_id)
    reference = encoder_input(track, rendition)
    assert reference.shape[1] == rendition.duration_ticks
    jit, batch = decode(jit_data), decode(batch_data)
    assert jit.shape == batch.shape  # the same samples decoded: same length after the edit list
    lag = best_lag(batch, reference)
    assert best_lag(jit, reference) == lag  # sample-aligned
    # FFmpeg's AAC decoder outputs the priming; its Opus decoder drops the pre-skip itself.
    assert lag == (rendition.encoder_delay_ticks if rendition.codec is Codec.AAC else 0)
    jit_joins, jit_median = join_snrs(rendition, jit, reference, lag)
    batch_joins, _ = join_snrs(rendition, batch, reference, lag)
    for index, (mine, theirs) in enumerate(zip(jit_joins, batch_joins, strict=True)):
        floor = min(theirs, jit_median) - JOIN_MARGIN_DB
        assert mine >= floor, f"{rendition_id} join {index + 1}: {mine:.1f} dB < {floor:.1f} dB"


def _ladder(*rungs: Rung) -> Ladder:
    return Ladder("jit-gapless", rungs)


@pytest.fixture(scope="module")
def stereo(tmp_path_factory: pytest.TempPathFactory) -> Track:
    ladder = _ladder(
        Rung(Codec.AAC, 64_000),
        Rung(Codec.AAC, 128_000),
        Rung(Codec.OPUS, 64_000),
        Rung(Codec.FLAC),
    )
    return Track(tmp_path_factory.mktemp("stereo"), ladder, 44100, 2, 3.4)


def _whole(track: Track, rendition_id: str, segments: list[bytes]) -> bytes:
    return build_init(track.source, track.plan, rendition_id) + b"".join(segments)


def _batch_whole(track: Track, rendition_id: str) -> bytes:
    rendition = track.batch.rendition(rendition_id)
    numbers = [s.number for s in rendition.segments]
    return track.batch_init(rendition) + b"".join(
        track.batch_segment(rendition, n) for n in numbers
    )


@pytest.mark.parametrize("rendition_id", ["aac-128k", "opus-64k"])
def test_a_rendition_built_segment_by_segment_plays_like_the_batch_one(
    stereo: Track, rendition_id: str
) -> None:
    """AAC at the source's 44.1 kHz; Opus resampled from 44.1 to 48 kHz."""
    assert len(stereo.plan.rendition(rendition_id).segments) >= 3
    jit = _whole(stereo, rendition_id, stereo.jit_segments(rendition_id))
    assert_plays_like_batch(stereo, rendition_id, jit, _batch_whole(stereo, rendition_id))


def test_flac_built_segment_by_segment_decodes_to_the_source_exactly(stereo: Track) -> None:
    rendition = stereo.plan.rendition("flac")
    decoded = decode(_whole(stereo, "flac", stereo.jit_segments("flac")))
    reference = encoder_input(stereo, rendition)
    assert decoded.shape == reference.shape
    assert np.array_equal(np.round(decoded * 32768), np.round(reference * 32768))


@pytest.mark.parametrize("rendition_id", ["aac-128k", "opus-64k"])
def test_segments_built_alone_mix_with_batch_segments(stereo: Track, rendition_id: str) -> None:
    """Alternating a built-alone segment with the batch packager's, each way round."""
    rendition = stereo.batch.rendition(rendition_id)
    jit = stereo.jit_segments(rendition_id, shuffle=False)
    batch_whole = _batch_whole(stereo, rendition_id)
    for parity in (0, 1):
        mixed = [
            jit[i] if i % 2 == parity else stereo.batch_segment(rendition, i + 1)
            for i in range(len(jit))
        ]
        whole = stereo.batch_init(rendition) + b"".join(mixed)
        assert_plays_like_batch(stereo, rendition_id, whole, batch_whole)


def test_switching_rungs_mid_track_through_the_shared_init(stereo: Track) -> None:
    group = stereo.plan.group_of("aac-128k")
    assert group is not None and group.rendition_ids == ("aac-64k", "aac-128k")
    inits = {build_init(stereo.source, stereo.plan, r) for r in group.rendition_ids}
    assert len(inits) == 1  # every rung of the group answers with the same init segment
    low, high = (stereo.jit_segments(r, shuffle=False) for r in group.rendition_ids)
    switched = [low[i] if i % 2 else high[i] for i in range(len(low))]
    batch_low, batch_high = (stereo.batch.rendition(r) for r in group.rendition_ids)
    batch_switched = [
        stereo.batch_segment(batch_low if i % 2 else batch_high, i + 1) for i in range(len(low))
    ]
    assert_plays_like_batch(
        stereo,
        "aac-128k",
        inits.pop() + b"".join(switched),
        stereo.batch_init(batch_high) + b"".join(batch_switched),
    )


def test_a_stereo_downmix_rung_of_a_5_1_source(tmp_path: Path) -> None:
    track = Track(
        tmp_path, _ladder(Rung(Codec.AAC, 128_000), Rung(Codec.OPUS, 64_000)), 48000, 6, 3.2
    )
    ids = [r.id for r in track.plan.renditions]
    assert ids == ["aac-320k-6ch", "opus-160k-6ch", "aac-128k-2ch", "opus-64k-2ch"]
    for rendition_id in ("aac-128k-2ch", "aac-320k-6ch", "opus-64k-2ch"):
        jit = _whole(track, rendition_id, track.jit_segments(rendition_id))
        assert_plays_like_batch(track, rendition_id, jit, _batch_whole(track, rendition_id))


def test_segments_encoded_without_pre_roll_are_caught(
    stereo: Track, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join check is sensitive: without pre-roll, AAC joins fail it."""
    monkeypatch.setitem(cut.PREROLL_FRAMES, Codec.AAC, 0)
    jit = [build_segment(stereo.source, stereo.plan, "aac-128k", n) for n in (1, 2, 3, 4)]
    with pytest.raises(AssertionError, match="join"):
        assert_plays_like_batch(
            stereo, "aac-128k", _whole(stereo, "aac-128k", jit), _batch_whole(stereo, "aac-128k")
        )
