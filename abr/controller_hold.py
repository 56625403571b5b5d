"""Hold the rung above the session's level while the buffer is deep.

Robust MPC plans at its forecast divided by one plus the recent error.  On a
link whose level sits between two rungs with a large spread around it (the
synthetic 3g scenario: a 200 kb/s level between 128 and 256, lognormal fading of
σ 0.35, dips), that discount keeps the plan on the rung below the level: the rung
above never looks sustainable over five segments.  Yet the only way to play
the link's rate is to alternate between the two, and the buffer is the
integrator that makes it safe.  BBA (Huang et al., SIGCOMM 2014) does exactly
that from the buffer alone, and on 3g it beat the plan by 3–7 points of
% of offline-optimal; its absolute rate map fails wherever its thresholds do not
fit the link (satellite 19, FCC x0.2 57).

:func:`held_rung` takes BBA's hysteresis and anchors it on the session's
level instead of absolute rates.  After the plan has chosen, the rung just above
the level (the lowest at or above it) is taken instead when all of these hold:

* the plan chose below it, for a reason of its own (not a panic, not a start);
* it is at most ``max_over_level`` (1.4) times the level: a rung far above the
  level is not an alternation the buffer can carry;
* the step up to it from the rung below is worth at least ``min_step_worth``
  (0.3) of a stall second per second of content, in the plan's own objective
  (QoE_lin prices a stall second at the top rung's quality).  The same fading
  scaled down (satellite: a 100 kb/s level between 64 and 128) gains half as
  much per held segment for the same stall risk, and holding there lost 6–38
  points (78 to 40–72);
* the recent samples' harmonic mean is at least ``min_recent_over_level`` (0.8)
  of the level: the link is not in a dip;
* the buffer is at least ``enter_buffer_fraction`` (2/3) of the plan's buffer
  cap, or the previous rung was this one or above and the buffer is at least
  ``keep_buffer_fraction`` (1/3) of it: up late, down late, so each hold lasts.

Measured (``docs/abr.md``, "Holding the rung above the level"): the synthetic
3g sets gain 0.3–4.8 points adaptive and 0.2–2.1 redirected, and no bundled,
held-out, training or 120-trace set loses more than 0.1 point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cadenza.abr.controller_table import PlanConfig, ladder_utilities


@dataclass(frozen=True, slots=True)
class HoldRules:
    """When :func:`held_rung` holds the rung above the level (module docstring)."""

    # False: the plan's rung stands.
    enabled: bool = True
    max_over_level: float = 1.4
    min_step_worth: float = 0.3
    min_recent_over_level: float = 0.8
    enter_buffer_fraction: float = 2.0 / 3.0
    keep_buffer_fraction: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_buffer_fraction <= self.enter_buffer_fraction <= 1.0:
            raise ValueError("need 0 <= keep_buffer_fraction <= enter_buffer_fraction <= 1")
        if self.max_over_level < 1.0 or self.min_recent_over_level < 0.0:
            raise ValueError("need max_over_level >= 1 and min_recent_over_level >= 0")


DEFAULT_HOLD: Final = HoldRules()


@lru_cache(maxsize=256)
def worth_holding(
    ladder_bps: tuple[int, ...], plan: PlanConfig, min_step_worth: float
) -> tuple[bool, ...]:
    """Per rung, whether the step up to it from the rung below is worth at least
    ``min_step_worth`` of a stall second per second of content (rung 0: never)."""
    quality, stall_price = ladder_utilities(ladder_bps, plan)
    steps = [quality[i] - quality[i - 1] for i in range(1, len(ladder_bps))]
    return (False, *(bool(step >= min_step_worth * stall_price) for step in steps))


def held_rung(
    ladder_bps: tuple[int, ...],
    index: int,
    previous: int,
    buffer_s: float,
    level_bps: float,
    recent_bps: float,
    *,
    plan: PlanConfig,
    rules: HoldRules = DEFAULT_HOLD,
) -> int:
    """The rung to serve: ``index`` (the plan's), or the rung above the level when
    the module docstring's conditions hold."""
    cap_s = plan.buffer_cap_s
    if not rules.enabled or buffer_s < rules.keep_buffer_fraction * cap_s:
        return index
    if not level_bps > 0 or recent_bps < rules.min_recent_over_level * level_bps:
        return index
    above = _first_at_or_above(ladder_bps, level_bps)
    if above is None or index >= above or ladder_bps[above] > rules.max_over_level * level_bps:
        return index
    if not worth_holding(ladder_bps, plan, rules.min_step_worth)[above]:
        return index
    if buffer_s >= rules.enter_buffer_fraction * cap_s or previous >= above:
        return above
    return index


def _first_at_or_above(ladder_bps: Sequence[int], bitrate_bps: float) -> int | None:
    for index, rung in enumerate(ladder_bps):
        if rung >= bitrate_bps:
            return index
    return None
