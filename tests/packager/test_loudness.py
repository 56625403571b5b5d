"""The streaming loudness meter against the numbers its specs publish.

ITU-R BS.1770-4 (K-weighting, gating, true peak) and the EBU conformance
signals of Tech 3341 (integrated loudness, true peak) and Tech 3342 (loudness
range), synthesised here rather than shipped.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.packager.loudness import (
    ABSOLUTE_GATE_LUFS,
    HOPS_PER_CHUNK,
    TRUE_PEAK_FLOOR_DBTP,
    LoudnessMeter,
    channel_weights,
    interpolator_fir,
    k_weighting_sos,
)

RATE_HZ = 48000


def sine(level_dbfs: float, seconds: float, *, hz: float = 1000.0, phase: float = 0.0,
         rate_hz: int = RATE_HZ, channels: int = 2) -> npt.NDArray[np.float32]:  # fmt: skip
    n = np.arange(round(seconds * rate_hz))
    tone = 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * hz * n / rate_hz + phase)
    return np.tile(tone.astype(np.float32), (channels, 1))


def measure(audio: npt.NDArray[np.float32], *, rate_hz: int = RATE_HZ, block: int = 16384,
            weights: tuple[float, ...] | None = None) -> LoudnessMeter:  # fmt: skip
    meter = LoudnessMeter(rate_hz, weights or (1.0,) * audio.shape[0])
    for start in range(0, audio.shape[1], block):
        meter.add(audio[:, start : start + block])
    return meter


def test_k_weighting_at_48k_matches_bs1770_tables_1_and_2() -> None:
    """BS.1770-4 Tables 1 and 2 list both stages' coefficients at 48 kHz."""
    shelf, highpass = k_weighting_sos(48000)
    assert shelf[:3] == pytest.approx([1.53512485958697, -2.69169618940638, 1.19839281085285])
    assert shelf[4:] == pytest.approx([-1.69065929318241, 0.73248077421585])
    assert highpass[:3] == pytest.approx([1.0, -2.0, 1.0])
    assert highpass[4:] == pytest.approx([-1.99004745483398, 0.99007225036621])


@pytest.mark.parametrize("level_dbfs", [-23.0, -33.0])
def test_stereo_1k_sine_reads_its_level(level_dbfs: float) -> None:
    """EBU Tech 3341 cases 1 and 2: a stereo 1 kHz sine at L dBFS measures L LUFS +-0.1."""
    meter = measure(sine(level_dbfs, 20.0))
    assert meter.integrated_lufs() == pytest.approx(level_dbfs, abs=0.1)


def test_relative_gate_ignores_quiet_passages() -> None:
    """EBU Tech 3341 case 3: -36 / -23 / -36 dBFS for 10 / 60 / 10 s measures -23.0 +-0.1."""
    audio = np.concatenate([sine(-36, 10), sine(-23, 60), sine(-36, 10)], axis=1)
    assert measure(audio).integrated_lufs() == pytest.approx(-23.0, abs=0.1)


def test_absolute_gate_ignores_near_silence() -> None:
    """EBU Tech 3341 case 4: -72 / -36 / -23 / -36 / -72 dBFS (10/10/60/10/10 s) is -23.0."""
    parts = [sine(-72, 10), sine(-36, 10), sine(-23, 60), sine(-36, 10), sine(-72, 10)]
    assert measure(np.concatenate(parts, axis=1)).integrated_lufs() == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize(("first", "second", "expected"), [(-20, -30, 10), (-20, -15, 5),
                                                           (-40, -20, 20)])  # fmt: skip
def test_loudness_range_of_two_levels(first: float, second: float, expected: float) -> None:
    """EBU Tech 3342 cases 1-3: 20 s at one level then 20 s at another: LRA = the step +-1."""
    audio = np.concatenate([sine(first, 20), sine(second, 20)], axis=1)
    assert measure(audio).loudness_range_lu() == pytest.approx(expected, abs=1.0)


def test_long_programme_counts_every_hop() -> None:
    """Hop energies are stored in chunks of HOPS_PER_CHUNK hops: a programme spanning
    more than one chunk gates and ranges over all of it. Two halves 6 dB apart, both
    above the relative gate: integrated loudness is their mean energy, LRA the step."""
    rate_hz = 8000
    half_s = HOPS_PER_CHUNK * 0.1 * 0.6
    audio = np.concatenate(
        [sine(-20, half_s, rate_hz=rate_hz), sine(-26, half_s, rate_hz=rate_hz)], axis=1
    )
    meter = measure(audio, rate_hz=rate_hz)
    expected = 10 * math.log10((10 ** (-20 / 10) + 10 ** (-26 / 10)) / 2)
    assert meter.integrated_lufs() == pytest.approx(expected, abs=0.1)
    assert meter.loudness_range_lu() == pytest.approx(6.0, abs=1.0)


def test_true_peak_finds_the_peak_between_samples() -> None:
    """BS.1770-4 Annex 2: a sine at fs/4 sampled 45 degrees off its crests has sample
    peaks 3 dB under its true peak; the oversampled meter reports the true one."""
    audio = sine(-1.0, 2.0, hz=RATE_HZ / 4, phase=math.pi / 4)
    sample_peak_db = 20 * math.log10(float(np.max(np.abs(audio))))
    assert sample_peak_db == pytest.approx(-4.01, abs=0.05)
    assert measure(audio).true_peak_dbtp() == pytest.approx(-1.0, abs=0.2)


def test_interpolator_has_unity_gain_per_phase() -> None:
    """Each polyphase branch passes DC unchanged, so a constant reads as itself."""
    fir = interpolator_fir(4)
    assert len(fir) >= 48  # BS.1770-4 Annex 2's minimum at 4x
    assert fir.reshape(-1, 4).sum(axis=0) == pytest.approx([1.0] * 4, abs=0.01)


def test_silence_reports_the_floors() -> None:
    """Silence gates out entirely: the meter's figure is the absolute gate, and the
    result records it as unmeasured (None, with the reason), not as -70 LUFS."""
    meter = measure(np.zeros((2, RATE_HZ * 5), dtype=np.float32))
    assert meter.integrated_lufs() == ABSOLUTE_GATE_LUFS
    assert meter.loudness_range_lu() == 0.0
    result = meter.result()
    assert result.integrated_lufs is None
    assert result.unmeasured_reason is not None and "absolute gate" in result.unmeasured_reason
    assert result.true_peak_dbtp == TRUE_PEAK_FLOOR_DBTP
    assert result.loudness_range_lu is None


def test_surround_channels_weigh_more_and_lfe_not_at_all() -> None:
    """BS.1770-4 Table 3: Ls/Rs get +1.5 dB (1.41), the LFE is excluded."""
    assert channel_weights(["FL", "FR", "FC", "LFE", "BL", "BR"]) == (1.0, 1.0, 1.0, 0.0,
                                                                      1.41, 1.41)  # fmt: skip


def test_lfe_energy_does_not_count() -> None:
    audio = np.zeros((6, RATE_HZ * 10), dtype=np.float32)
    audio[:2] = sine(-23, 10)
    loud_lfe = audio.copy()
    loud_lfe[3] = sine(-6, 10, hz=60, channels=1)[0]
    weights = channel_weights(["FL", "FR", "FC", "LFE", "BL", "BR"])
    assert measure(loud_lfe, weights=weights).integrated_lufs() == pytest.approx(
        measure(audio, weights=weights).integrated_lufs(), abs=1e-9
    )


@pytest.mark.parametrize("rate_hz", [8000, 44100, 96000, 192000])
def test_level_holds_at_every_supported_rate(rate_hz: int) -> None:
    """The K-weighting is derived per rate, so a 1 kHz sine reads the same everywhere."""
    meter = measure(sine(-23, 10, rate_hz=rate_hz), rate_hz=rate_hz)
    assert meter.integrated_lufs() == pytest.approx(-23.0, abs=0.1)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=RATE_HZ * 6 - 1), max_size=12))
def test_results_do_not_depend_on_block_boundaries(cuts: list[int]) -> None:
    """Filter and interpolator state carry across blocks: any split gives the same figures."""
    rng = np.random.default_rng(3)
    audio = (0.2 * rng.standard_normal((2, RATE_HZ * 6))).astype(np.float32)
    whole = measure(audio, block=audio.shape[1])
    split = LoudnessMeter(RATE_HZ, (1.0, 1.0))
    bounds = [0, *sorted(set(cuts)), audio.shape[1]]
    for start, end in itertools.pairwise(bounds):
        split.add(audio[:, start:end])
    assert split.integrated_lufs() == pytest.approx(whole.integrated_lufs(), abs=1e-9)
    assert split.true_peak_dbtp() == pytest.approx(whole.true_peak_dbtp(), abs=1e-9)
    assert split.loudness_range_lu() == pytest.approx(whole.loudness_range_lu(), abs=1e-9)
