"""BOLA as dash.js 5.2.1's BolaRule computes it (``docs/player-models.md`` 2.3).

BOLA is Spiteri, Urgaonkar and Sitaraman, "BOLA: Near-Optimal Bitrate
Adaptation for Online Videos" (INFOCOM 2016); these are dash.js's parameters
and score, the ``− 1`` included, with ties going to the higher rung.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MINIMUM_BUFFER_S: Final = 10.0  # BolaRule MINIMUM_BUFFER_S
MINIMUM_BUFFER_PER_LEVEL_S: Final = 2.0  # BolaRule MINIMUM_BUFFER_PER_BITRATE_LEVEL_S
PLACEHOLDER_DECAY: Final = 0.99  # BolaRule PLACEHOLDER_BUFFER_DECAY


@dataclass(frozen=True, slots=True)
class BolaParams:
    """BOLA's control parameters as dash.js's BolaRule derives them."""

    utilities: tuple[float, ...]
    vp: float
    gp: float


def bola_params(
    ladder_bps: Sequence[int],
    buffer_time_default_s: float = 18.0,
    min_buffer_s: float = MINIMUM_BUFFER_S,
    per_level_s: float = MINIMUM_BUFFER_PER_LEVEL_S,
) -> BolaParams:
    """Utilities ``u_m = ln(R_m / R_0) + 1`` and Vp, γp (``_calculateBolaParameters``).

    BOLA (Spiteri et al., INFOCOM 2016) uses ``ln(R_m / R_0)``; dash.js adds 1
    so the lowest rung has utility 1.  ``bufferTime = max(bufferTimeDefault,
    10 + 2 · levels)``; ``γp = (u_max − 1) / (bufferTime / 10 − 1)``,
    ``Vp = 10 / γp``, so the lowest rung wins below 10 s and the top at bufferTime.
    """
    utilities = tuple(math.log(bitrate / ladder_bps[0]) + 1.0 for bitrate in ladder_bps)
    if len(ladder_bps) == 1:
        return BolaParams(utilities, vp=min_buffer_s, gp=1.0)
    buffer_time_s = max(buffer_time_default_s, min_buffer_s + per_level_s * len(ladder_bps))
    gp = (utilities[-1] - 1.0) / (buffer_time_s / min_buffer_s - 1.0)
    return BolaParams(utilities, vp=min_buffer_s / gp, gp=gp)


def bola_choice(ladder_bps: Sequence[int], buffer_s: float, params: BolaParams) -> int:
    """The rung maximising ``(Vp · (u_m − 1 + γp) − buffer) / R_m``; ties go up (``s >= score``)."""
    best, best_score = 0, -math.inf
    for index, (utility, bitrate) in enumerate(zip(params.utilities, ladder_bps, strict=True)):
        score = (params.vp * (utility - 1.0 + params.gp) - buffer_s) / bitrate
        if score >= best_score:
            best, best_score = index, score
    return best


def bola_min_buffer_s(ladder_bps: Sequence[int], params: BolaParams, index: int) -> float:
    """``_minBufferLevelForRepresentation``: from this buffer BOLA prefers ``index`` to lower."""
    level_s = 0.0
    rate, utility = ladder_bps[index], params.utilities[index]
    for lower in range(index - 1, -1, -1):
        lower_rate, lower_utility = ladder_bps[lower], params.utilities[lower]
        crossing = (rate * lower_utility - lower_rate * utility) / (rate - lower_rate)
        level_s = max(level_s, params.vp * (params.gp + crossing))
    return level_s


def bola_max_buffer_s(params: BolaParams, index: int) -> float:
    """``_maxBufferLevelForRepresentation``: Vp · (u + γp)."""
    return params.vp * (params.utilities[index] + params.gp)
