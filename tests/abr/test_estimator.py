"""The dual EWMA's arithmetic, bit for bit: its half-life factors are computed
once per half-life, and a sample must still land on the value the formula gives."""

from __future__ import annotations

import math
import random

from cadenza.abr.estimator import DualEwma, Ewma


def _sampled(
    half_life_s: float, estimate: float, total_s: float, weight_s: float, value: float
) -> tuple[float, float]:
    kept = float(math.exp(math.log(0.5) / half_life_s) ** weight_s)
    return value * (1.0 - kept) + kept * estimate, total_s + weight_s


def test_samples_land_on_the_formula_exactly() -> None:
    rng = random.Random(15)
    estimator = DualEwma.create()
    fast, slow = (0.0, 0.0), (0.0, 0.0)
    for _ in range(500):
        rate_bps, weight_s = rng.uniform(1e4, 1e7), rng.uniform(0.05, 8.0)
        estimator = estimator.sample_rate(rate_bps, weight_s)
        fast = _sampled(3.0, *fast, weight_s, rate_bps)
        slow = _sampled(9.0, *slow, weight_s, rate_bps)
        assert (estimator.fast.estimate, estimator.fast.total_weight) == fast
        assert (estimator.slow.estimate, estimator.slow.total_weight) == slow
    unbiased = [
        e / (1.0 - float(math.exp(math.log(0.5) / h) ** w))
        for h, (e, w) in ((3.0, fast), (9.0, slow))
    ]
    assert estimator.estimate_bps() == min(unbiased)


def test_each_half_life_has_its_own_factor() -> None:
    for half_life_s in (0.5, 3.0, 9.0, 3.0, 17.25):
        assert Ewma(half_life_s).alpha == math.exp(math.log(0.5) / half_life_s)
    assert Ewma(2.0).sample(2.0, 100.0).estimate == 100.0 * (1.0 - Ewma(2.0).alpha ** 2.0)
    assert Ewma(4.0).sample(2.0, 100.0).estimate != Ewma(2.0).sample(2.0, 100.0).estimate
