"""What the origin controller remembers of a session's throughput, and what it
forecasts from it: the packed window of recent (sample, error) pairs robust MPC
reads, and the session's level the forecast reverts toward.

Pure functions of their arguments; :mod:`cadenza.abr.controller` keeps the
numbers in its :class:`~cadenza.abr.controller.ControllerState`.
"""

from __future__ import annotations

import math
import struct
from typing import Final

# One (sample bit/s, relative error) float32 pair of the packed window.
PAIR: Final = struct.Struct("<ff")
# Samples are clamped into this range (a hostile ``mtp`` must not overflow float32).
MIN_SAMPLE_BPS: Final = 1.0
MAX_SAMPLE_BPS: Final = 1e12
# The natural log of the largest sample: a level (the mean of clamped samples' logs,
# starting from 0) is never outside [0, this].
MAX_LOG_SAMPLE: Final = math.log(MAX_SAMPLE_BPS)


def unpack_window(window: bytes) -> tuple[list[float], list[float]]:
    """The (samples, errors) of a packed window.  A window that did not come from
    here (a stored state of another version, a corrupted one) loses what cannot be
    a sample: a partial pair, a sample that is not a positive number."""
    window = window[len(window) % PAIR.size :]
    pairs = len(window) // PAIR.size
    if not pairs:
        return [], []
    floats = _FLOATS.get(pairs) or _floats(pairs)
    values = floats.unpack(window)
    samples, errors = list(values[0::2]), list(values[1::2])
    # All finite (a sum of finite float32s is finite; a NaN or infinity is not), samples
    # positive and errors not negative: as the loop below would leave them.
    if sum(samples) < math.inf and min(samples) > 0 and sum(errors) < math.inf and min(errors) >= 0:
        return samples, errors
    samples, errors = [], []
    for sample, error in PAIR.iter_unpack(window):
        if math.isfinite(sample) and sample > 0:
            samples.append(sample)
            errors.append(error if math.isfinite(error) and error >= 0 else 0.0)
    return samples, errors


# ``struct`` formats of a window of n pairs, unpacked at once.
_FLOATS: dict[int, struct.Struct] = {}


def _floats(pairs: int) -> struct.Struct:
    floats = struct.Struct(f"<{2 * pairs}f")
    if len(_FLOATS) < 64:
        _FLOATS[pairs] = floats
    return floats


def level_of(level_log: float, level_samples: int, weight: float, min_samples: int) -> float | None:
    """The session's level, the log of a bit rate: ``level_log`` (an exponentially
    weighted mean of the samples' natural logs, ``weight`` for each new one)
    divided by its start-up correction ``1 − (1 − weight) ** level_samples``;
    None while it holds fewer than ``min_samples`` samples (at least one), or
    with ``weight`` 0."""
    if weight <= 0 or level_samples < max(min_samples, 1):
        return None
    return level_log / (1.0 - (1.0 - weight) ** level_samples)


def reverted_bps(
    estimate_bps: float,
    level_log: float,
    level_samples: int,
    horizon: int,
    weight: float,
    reversion: float,
    min_samples: int = 1,
) -> float:
    """The constant throughput a plan of ``horizon`` segments assumes when the recent
    ``estimate_bps`` reverts toward the session's level.

    ``level_log`` is an exponentially weighted mean of the samples' natural logs
    (``weight`` for each new one) before its start-up correction, which divides
    it by ``1 − (1 − weight) ** level_samples``.  In logs, the k-th segment's
    forecast is ``level + reversion ** k · (log estimate − level)``: a
    first-order autoregression around the level, the shape of a fading link's
    throughput, which a five-sample mean follows up and down.  The plan models a
    constant throughput, and equal-size segments take ``Σ size / r_k``, so it
    gets the forecasts' harmonic mean.  The estimate itself while the level
    holds fewer than ``min_samples`` samples, or with ``weight`` 0.
    """
    level = level_of(level_log, level_samples, weight, min_samples)
    if level is None or horizon < 1:
        return estimate_bps
    gap = math.log(estimate_bps) - level
    inverse = 0.0
    factor = 1.0
    for _ in range(horizon):
        factor *= reversion
        inverse += math.exp(-(level + factor * gap))
    return horizon / inverse
