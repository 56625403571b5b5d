"""Throughput estimation: a dual exponentially weighted moving average.

The same shape as hls.js's bandwidth estimator (a fast and a slow EWMA, each
weighted by how long a sample took, the estimate the lower of the two so it
drops fast and climbs slowly), written as immutable values: ``sample``
returns a new estimator, so a session's state can be stored anywhere and a
policy can be replayed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from cadenza.abr.frozen import fast_init

# hls.js defaults for VOD (abrEwmaFastVoD, abrEwmaSlowVoD, abrEwmaDefaultEstimate).
FAST_HALF_LIFE_S: Final = 3.0
SLOW_HALF_LIFE_S: Final = 9.0
DEFAULT_ESTIMATE_BPS: Final = 500_000.0
# Samples shorter than this are clamped: a 1 ms "download" of a cached object
# says nothing about the network and would blow the estimate up.
MIN_DURATION_S: Final = 0.05
# The fast EWMA must have seen this much weight before it is trusted.
MIN_WEIGHT_S: Final = 0.001
# Confidence reaches one half after this many seconds of samples.
CONFIDENCE_HALF_WEIGHT_S: Final = 4.0

# ``Ewma.alpha`` per half-life: an estimator is sampled on every decided segment,
# and the half-lives in use are a handful of constants.
_ALPHAS: dict[float, float] = {}


def _alpha(half_life_s: float) -> float:
    alpha = _ALPHAS.get(half_life_s)
    if alpha is None:
        alpha = math.exp(math.log(0.5) / half_life_s)
        if len(_ALPHAS) < 64:
            _ALPHAS[half_life_s] = alpha
    return alpha


@fast_init
@dataclass(frozen=True, slots=True)
class Ewma:
    """One EWMA whose weight is a duration: ``alpha ** weight`` decays per second."""

    half_life_s: float
    estimate: float = 0.0
    total_weight: float = 0.0

    @property
    def alpha(self) -> float:
        return _alpha(self.half_life_s)

    def sample(self, weight: float, value: float) -> Ewma:
        half_life_s = self.half_life_s
        kept = float(_alpha(half_life_s) ** weight)
        return Ewma(
            half_life_s,
            value * (1.0 - kept) + kept * self.estimate,
            self.total_weight + weight,
        )

    def value(self) -> float:
        """The estimate without the bias towards the zero it started from."""
        total_weight = self.total_weight
        if total_weight <= 0.0:
            return self.estimate
        return self.estimate / (1.0 - float(_alpha(self.half_life_s) ** total_weight))


@fast_init
@dataclass(frozen=True, slots=True)
class DualEwma:
    fast: Ewma
    slow: Ewma
    default_bps: float = DEFAULT_ESTIMATE_BPS

    @classmethod
    def create(
        cls,
        fast_half_life_s: float = FAST_HALF_LIFE_S,
        slow_half_life_s: float = SLOW_HALF_LIFE_S,
        default_bps: float = DEFAULT_ESTIMATE_BPS,
    ) -> DualEwma:
        if not 0 < fast_half_life_s <= slow_half_life_s:
            raise ValueError("need 0 < fast_half_life_s <= slow_half_life_s")
        return cls(Ewma(fast_half_life_s), Ewma(slow_half_life_s), default_bps)

    def sample_download(self, duration_s: float, size_bytes: int) -> DualEwma:
        """One object of ``size_bytes`` took ``duration_s`` to arrive."""
        duration_s = max(duration_s, MIN_DURATION_S)
        return self.sample_rate(8.0 * size_bytes / duration_s, duration_s)

    def sample_rate(self, rate_bps: float, weight_s: float) -> DualEwma:
        """A throughput measured over ``weight_s`` seconds (a CMCD ``mtp``, say)."""
        if rate_bps <= 0 or weight_s <= 0 or not math.isfinite(rate_bps):
            return self
        return DualEwma(
            self.fast.sample(weight_s, rate_bps),
            self.slow.sample(weight_s, rate_bps),
            self.default_bps,
        )

    @property
    def can_estimate(self) -> bool:
        return self.fast.total_weight >= MIN_WEIGHT_S

    @property
    def weight_s(self) -> float:
        return self.fast.total_weight

    def estimate_bps(self) -> float:
        fast = self.fast
        if fast.total_weight < MIN_WEIGHT_S:  # not can_estimate
            return self.default_bps
        return min(fast.value(), self.slow.value())

    def confidence(self) -> float:
        """0 with no samples, 0.5 after four seconds' worth, towards 1 after."""
        return 1.0 - float(0.5 ** (self.weight_s / CONFIDENCE_HALF_WEIGHT_S))
