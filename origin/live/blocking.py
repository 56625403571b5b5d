"""Blocking playlist reload (RFC 8216bis 6.2.5.2): the delivery directives of a
media playlist request, checked before anything waits, and whether a model
already answers them.

- ``_HLS_msn=M`` holds the request until the playlist has media segment ``M``
  (or a later one); with ``_HLS_part=P``, until it has part ``P`` of segment ``M``
  (or a later one; a part index past segment ``M``'s last part is part 0 of the
  next segment).  ``_HLS_part`` without ``_HLS_msn`` is a ``400`` (MUST).
- An ``M`` more than two past the last segment's media sequence number, or a part
  more than the Advance Part Limit past the last part, is answered ``400`` at
  once (SHOULD), never held: the limit is ``3 / part target`` parts with parts
  under a second, else 3.
- A request not answerable within three target durations gets ``503`` (SHOULD).
- Once the playlist has ``EXT-X-ENDLIST`` the directives are ignored (MUST).
- ``_HLS_skip=YES`` (or ``v2``, which also skips date ranges: this origin writes
  none) asks for the delta update (6.2.5.1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cadenza.manifests.live import LivePresentation, LiveRendition
from cadenza.manifests.live_window import has_position, last_position
from cadenza.origin.live.errors import DeliveryDirectiveError

MSN: Final = "_HLS_msn"
PART: Final = "_HLS_part"
SKIP: Final = "_HLS_skip"
SKIP_VALUES: Final = frozenset({"YES", "v2"})
MSN_AHEAD_MAX: Final = 2  # segments past the last one a request may ask for
_MAX_DIGITS: Final = 12  # a media sequence number or part index this long is nonsense


@dataclass(frozen=True, slots=True)
class Directives:
    msn: int | None
    part: int | None
    skip: bool

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def _number(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > _MAX_DIGITS or not (raw.isascii() and raw.isdigit()):
        raise DeliveryDirectiveError(name, raw, "not a decimal integer of at least 0")
    return int(raw)


def parse_directives(query: Mapping[str, str]) -> Directives:
    """The directives of a playlist request's query; raises
    :class:`DeliveryDirectiveError` for a malformed one."""
    msn = _number(query, MSN)
    part = _number(query, PART)
    if part is not None and msn is None:
        raise DeliveryDirectiveError(PART, query.get(PART), "_HLS_part without _HLS_msn")
    skip = query.get(SKIP)
    if skip is not None and skip not in SKIP_VALUES:
        raise DeliveryDirectiveError(SKIP, skip, "not YES or v2")
    return Directives(msn, part, skip is not None)


def advance_part_limit(presentation: LivePresentation) -> int:
    """RFC 8216bis 6.2.5.2: ``3 / PART-TARGET`` parts with a part target under one
    second, else 3."""
    part_target_s = presentation.part_target_us / 1_000_000
    if part_target_s < 1:
        return math.ceil(3 / part_target_s)
    return 3


def parts_per_segment(presentation: LivePresentation) -> int:
    return max(1, math.ceil(presentation.segment_target_us / presentation.part_target_us))


def check_not_too_far(
    presentation: LivePresentation, rendition: LiveRendition, directives: Directives
) -> None:
    """Raise :class:`DeliveryDirectiveError` for a request the server SHOULD NOT
    hold: ``M`` past the last segment plus two, or a part past the last part by
    more than the Advance Part Limit."""
    if directives.msn is None:
        return
    position = last_position(rendition)
    if position is None:  # nothing yet: the first segment (or the next) may be asked
        return
    last_msn, last_part = position
    if directives.msn > last_msn + MSN_AHEAD_MAX:
        raise DeliveryDirectiveError(
            MSN, str(directives.msn), f"more than {MSN_AHEAD_MAX} past the last segment {last_msn}"
        )
    if directives.part is None:
        return
    ahead = (directives.msn - last_msn) * parts_per_segment(presentation) + (
        directives.part - last_part
    )
    limit = advance_part_limit(presentation)
    if ahead > limit:
        raise DeliveryDirectiveError(
            PART,
            str(directives.part),
            f"{ahead} parts past the last one (the Advance Part Limit is {limit})",
        )


def answered_by(rendition: LiveRendition, directives: Directives) -> bool:
    """Whether a playlist of ``rendition`` answers the directives now."""
    if directives.msn is None:
        return True
    return has_position(rendition, directives.msn, directives.part)


def block_timeout_s(presentation: LivePresentation) -> float:
    """Three target durations (RFC 8216bis 6.2.5.2), the target duration being
    ``EXT-X-TARGETDURATION``: the segment target rounded up to whole seconds
    (4.4.3.1)."""
    return 3.0 * math.ceil(presentation.segment_target_us / 1_000_000)
