"""QoE of a simulated session, and its plain metrics.

:func:`qoe_lin` is the linear QoE of Pensieve (Mao et al., SIGCOMM 2017) and
robust MPC (Yin et al., SIGCOMM 2015); :func:`qoe_perceptual` swaps the bitrate
utility for a saturating one.  Both charge the startup delay as rebuffering, as
Pensieve does (its first chunk is downloaded on an empty buffer).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Final

from cadenza.abr.sim.session import SessionResult

# Perceptual utility: 1 − exp(−R / R0); 64 kb/s gives 0.63, 128 kb/s 0.86, 256 kb/s 0.98.
PERCEPTUAL_R0_BPS: Final = 64_000.0
# Relative tolerance when comparing floating-point QoE.
QOE_TOLERANCE: Final = 1e-9


def quality_mbps(bitrate_bps: float) -> float:
    """The linear utility of Pensieve's QoE_lin: the bitrate in Mb/s."""
    return bitrate_bps / 1e6


def perceptual_quality(bitrate_bps: float, r0_bps: float = PERCEPTUAL_R0_BPS) -> float:
    """A concave audio utility in [0, 1): ``1 − exp(−R / R0)``.

    Motivated by the audio quality model of ITU-T P.1203.2, whose predicted
    MOS for AAC rises steeply below about 96 kb/s and saturates by 128–192
    kb/s.  With R0 = 64 kb/s: 64 kb/s → 0.63, 128 → 0.86, 192 → 0.95, 256 →
    0.98, 320 → 0.99.  Rebuffering costs 1 per second (μ_p = 1).
    """
    return 1.0 - math.exp(-bitrate_bps / r0_bps)


def rebuffer_penalty_mbps(ladder_bps: Sequence[int]) -> float:
    """μ of QoE_lin: the top rung in Mb/s (Pensieve's choice)."""
    return quality_mbps(max(ladder_bps))


def _qoe(qualities: Sequence[float], penalty_s: float, mu: float) -> float:
    smoothness = sum(abs(b - a) for a, b in itertools.pairwise(qualities))
    return sum(qualities) - mu * penalty_s - smoothness


def qoe_lin(result: SessionResult) -> float:
    """Σ q(R_n) − μ·(startup + rebuffer) − Σ |q(R_{n+1}) − q(R_n)|, q in Mb/s, μ = q(R_max)."""
    qualities = [quality_mbps(chunk.bitrate_bps) for chunk in result.chunks]
    penalty_s = result.startup_s + result.rebuffer_s
    return _qoe(qualities, penalty_s, rebuffer_penalty_mbps(result.ladder_bps))


def qoe_perceptual(result: SessionResult) -> float:
    """QoE_lin's shape with :func:`perceptual_quality` per chunk and μ_p = 1."""
    qualities = [perceptual_quality(chunk.bitrate_bps) for chunk in result.chunks]
    return _qoe(qualities, result.startup_s + result.rebuffer_s, 1.0)


def average_bitrate_kbps(result: SessionResult) -> float:
    return sum(chunk.bitrate_bps for chunk in result.chunks) / len(result.chunks) / 1000.0


def rebuffer_ratio(result: SessionResult) -> float:
    """Stall time after startup over the media time played."""
    return result.rebuffer_s / result.playback_s


def switches_per_min(result: SessionResult) -> float:
    switches = sum(1 for a, b in itertools.pairwise(result.rungs) if a != b)
    return switches / (result.playback_s / 60.0)
