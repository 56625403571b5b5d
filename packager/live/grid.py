"""The live timeline's grid: one rate for every rung, parts of whole codec frames of
every codec in the ladder, segments of whole parts.

Every live rung encodes at :data:`LIVE_RATE_HZ`, so all renditions share one
timescale and one grid: part ``k`` of every rendition covers the same ticks
``[k * part_ticks, (k + 1) * part_ticks)``.  A part holds whole frames of each
codec: AAC's 1024-sample frames and Opus's 960 (20 ms) meet every 15360 samples,
320 ms, which is the default part (RFC 8216bis 4.4.3.7: each part at most
PART-TARGET; here every part is exactly it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from cadenza.manifests.model import Codec
from cadenza.packager.errors import LadderError

LIVE_RATE_HZ: Final = 48000
FRAME_TICKS: Final = {Codec.AAC: 1024, Codec.OPUS: 960}
DEFAULT_PART_DURATION: Final = Fraction(8, 25)  # 0.32 s: 15 AAC frames, 16 Opus frames
DEFAULT_SEGMENT_DURATION: Final = Fraction(2)  # rounded to whole parts: 6 x 0.32 = 1.92 s
DEFAULT_WINDOW_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class LiveGrid:
    part_ticks: int
    parts_per_segment: int
    timescale: int = LIVE_RATE_HZ

    @property
    def part_us(self) -> int:
        return self.part_ticks * 1_000_000 // self.timescale

    @property
    def segment_us(self) -> int:
        return self.part_us * self.parts_per_segment

    def part_start(self, index: int) -> int:
        return index * self.part_ticks


def plan_grid(
    codecs: Iterable[Codec], part_duration: Fraction, segment_duration: Fraction
) -> LiveGrid:
    """Parts of whole frames of every codec, nearest ``part_duration`` (at least one
    common unit); segments of whole parts, nearest ``segment_duration``."""
    unit = 1
    for codec in set(codecs):
        if codec not in FRAME_TICKS:
            raise LadderError(codec.value, "live packages AAC and Opus rungs only")
        unit = math.lcm(unit, FRAME_TICKS[codec])
    units = max(1, round(part_duration * LIVE_RATE_HZ / unit))
    part_ticks = units * unit
    parts = max(1, round(segment_duration * LIVE_RATE_HZ / part_ticks))
    return LiveGrid(part_ticks=part_ticks, parts_per_segment=parts)
