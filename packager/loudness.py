"""Streaming loudness meter: ITU-R BS.1770-4 integrated loudness and true peak,
EBU Tech 3342 loudness range.

Audio arrives block by block from the single decode; filter and oversampler
state is carried across blocks, so results do not depend on block sizes, and
memory holds one energy value per channel per 100 ms hop, not the audio.

Floors keep results JSON-friendly: a programme that is entirely gated out
(silence) reports -70.0 LUFS (the absolute gate) and a true peak of digital
silence reports -120.0 dBTP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import signal

from manifests.model import Loudness

ABSOLUTE_GATE_LUFS: Final = -70.0
RELATIVE_GATE_LU: Final = -10.0
LRA_RELATIVE_GATE_LU: Final = -20.0
TRUE_PEAK_FLOOR_DBTP: Final = -120.0
HOPS_PER_BLOCK: Final = 4  # 400 ms gating blocks with 75 % overlap (BS.1770-4 2.1)
HOPS_PER_SHORT_TERM: Final = 30  # 3 s short-term windows (EBU Tech 3342)

# BS.1770-4 Table 4 channel weights; LFE is excluded from the measurement.
_SURROUND: Final = frozenset({"BL", "BR", "SL", "SR", "BC", "SIDE_LEFT", "SIDE_RIGHT"})


def channel_weights(channel_names: Sequence[str]) -> tuple[float, ...]:
    """Weights by FFmpeg channel name: surrounds +1.5 dB (1.41), LFE 0, others 1."""
    weights = []
    for name in channel_names:
        upper = name.upper()
        if upper in ("LFE", "LFE2", "LOW_FREQUENCY"):
            weights.append(0.0)
        elif upper in _SURROUND:
            weights.append(1.41)
        else:
            weights.append(1.0)
    return tuple(weights)


def k_weighting_sos(sample_rate_hz: int) -> npt.NDArray[np.float64]:
    """Both K-weighting stages as second-order sections, for any sample rate.

    Derived from the analog prototypes (a high-frequency shelf and the RLB
    high-pass) through the bilinear transform with pre-warping; at 48 kHz this
    reproduces the coefficients tabulated in BS.1770-4 Tables 1 and 2.
    """
    # Stage 1: high shelf, +4 dB above ~1.7 kHz.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate_hz)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    # Stage 2: RLB high-pass at ~38 Hz.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate_hz)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def _oversampling(sample_rate_hz: int) -> int:
    """BS.1770-4 Annex 2: 4x below 96 kHz, 2x below 192 kHz, none above."""
    if sample_rate_hz < 96000:
        return 4
    return 2 if sample_rate_hz < 192000 else 1


def _loudness(mean_square: float) -> float:
    return -0.691 + 10 * math.log10(mean_square) if mean_square > 0 else -math.inf


class LoudnessMeter:
    def __init__(self, sample_rate_hz: int, channel_weights: Sequence[float]) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.weights = np.asarray(channel_weights, dtype=np.float64)
        channels = len(self.weights)
        self._sos = k_weighting_sos(sample_rate_hz)
        self._zi = np.zeros((self._sos.shape[0], channels, 2))
        self._hop_energy: list[npt.NDArray[np.float64]] = []  # per hop: sum of squares per channel
        self._hop_count = 0
        self._pending = np.zeros((channels, 0))
        self._samples = 0
        self._factor = _oversampling(sample_rate_hz)
        taps_per_phase = 12
        if self._factor > 1:
            fir = signal.firwin(
                taps_per_phase * self._factor, 0.95 / self._factor, window=("kaiser", 8.0)
            )
            self._fir = fir * self._factor
        else:
            self._fir = np.ones(1)
        self._history = np.zeros((channels, taps_per_phase))
        self._peak = 0.0

    def _hop_bounds(self, index: int) -> int:
        """Sample index where hop ``index`` starts: exact for rates not divisible by 10."""
        return index * self.sample_rate_hz // 10

    def add(self, block: npt.NDArray[Any]) -> None:
        if block.shape[-1] == 0:
            return
        x = np.asarray(block, dtype=np.float64)
        self._true_peak(x)
        filtered, self._zi = signal.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        squares = np.concatenate([self._pending, filtered * filtered], axis=1)
        start = self._samples - self._pending.shape[1]
        self._samples += x.shape[1]
        cursor = 0
        while True:
            begin = self._hop_bounds(self._hop_count)
            end = self._hop_bounds(self._hop_count + 1)
            if end > self._samples:
                break
            lo, hi = begin - start, end - start
            self._hop_energy.append(squares[:, lo:hi].sum(axis=1))
            self._hop_count += 1
            cursor = hi
        self._pending = squares[:, cursor:]

    def _true_peak(self, x: npt.NDArray[np.float64]) -> None:
        if self._factor == 1:
            self._peak = max(self._peak, float(np.max(np.abs(x))))
            return
        extended = np.concatenate([self._history, x], axis=1)
        history = self._history.shape[1]
        upsampled = signal.upfirdn(self._fir, extended, up=self._factor, axis=-1)
        valid = upsampled[:, history * self._factor : (history + x.shape[1]) * self._factor]
        self._peak = max(self._peak, float(np.max(np.abs(valid))))
        self._history = extended[:, -history:]

    def _windows(self, hops: int) -> npt.NDArray[np.float64]:
        """Weighted mean square of every window of ``hops`` consecutive hops."""
        if self._hop_count < hops:
            return np.zeros(0)
        energy = np.array(self._hop_energy)  # (hop, channel)
        cumulative = np.vstack([np.zeros(energy.shape[1]), np.cumsum(energy, axis=0)])
        sums = cumulative[hops:] - cumulative[:-hops]  # (window, channel)
        lengths = np.array(
            [
                self._hop_bounds(i + hops) - self._hop_bounds(i)
                for i in range(self._hop_count - hops + 1)
            ],
            dtype=np.float64,
        )
        result: npt.NDArray[np.float64] = (sums / lengths[:, None]) @ self.weights
        return result

    def integrated_lufs(self) -> float:
        blocks = self._windows(HOPS_PER_BLOCK)
        with np.errstate(divide="ignore"):
            levels = -0.691 + 10 * np.log10(blocks)
        above = blocks[levels > ABSOLUTE_GATE_LUFS]
        if above.size == 0:
            return ABSOLUTE_GATE_LUFS
        relative = _loudness(float(above.mean())) + RELATIVE_GATE_LU
        gated = above[-0.691 + 10 * np.log10(above) > relative]
        return max(ABSOLUTE_GATE_LUFS, _loudness(float(gated.mean())))

    def loudness_range_lu(self) -> float:
        windows = self._windows(HOPS_PER_SHORT_TERM)
        with np.errstate(divide="ignore"):
            levels = -0.691 + 10 * np.log10(windows)
        above = levels[levels > ABSOLUTE_GATE_LUFS]
        if above.size == 0:
            return 0.0
        relative = _loudness(float(windows[levels > ABSOLUTE_GATE_LUFS].mean())) + (
            LRA_RELATIVE_GATE_LU
        )
        gated = above[above > relative]
        if gated.size == 0:
            return 0.0
        low, high = np.percentile(gated, [10, 95])
        return float(high - low)

    def true_peak_dbtp(self) -> float:
        if self._peak <= 0:
            return TRUE_PEAK_FLOOR_DBTP
        return max(TRUE_PEAK_FLOOR_DBTP, 20 * math.log10(self._peak))

    def result(self) -> Loudness:
        return Loudness(
            integrated_lufs=round(self.integrated_lufs(), 2),
            true_peak_dbtp=round(self.true_peak_dbtp(), 2),
            loudness_range_lu=round(self.loudness_range_lu(), 2),
        )
