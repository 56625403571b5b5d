"""The DVR window of a live rendition: what leaves it, where the stream stands, and the
DASH Periods the window holds.  Pure functions of :mod:`cadenza.manifests.live`.

Periods (ISO/IEC 23009-1 5.3.2): a new Period begins at each discontinuity (a format
change or a restarted input).  A stall does not begin one: its gap parts hold the
silence the rungs encoded while the input gave nothing, on the same timeline, so a
DASH player plays through it (the MPD marks it with an event instead).  A Period is
named by the number of the segment that began it and starts where that segment
starts, so its id and start stay the same in every MPD while any of it is in the
window; :func:`trim_window` records the Period of the window's first segment when the
segment that began it leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cadenza.manifests.live import LiveRendition, LiveSegment


@dataclass(frozen=True, slots=True)
class PeriodRun:
    """The window's segments (gaps included) of one DASH Period."""

    number: int  # media sequence number of the segment that began it: its id
    start_ticks: int  # where that segment starts: the Period's start
    segments: tuple[LiveSegment, ...]


def split_periods(rendition: LiveRendition) -> list[PeriodRun]:
    """The window's segments by Period, oldest first; never empty (an empty window is
    one Period without segments)."""
    return _split(rendition.segments, rendition.period_number, rendition.period_start_ticks)


def _split(segments: Sequence[LiveSegment], number: int, start_ticks: int) -> list[PeriodRun]:
    runs: list[PeriodRun] = []
    current: list[LiveSegment] = []
    for segment in segments:
        if segment.discontinuity and current:
            runs.append(PeriodRun(number, start_ticks, tuple(current)))
            current = []
        if segment.discontinuity:
            number, start_ticks = segment.number, segment.start_ticks
        current.append(segment)
    runs.append(PeriodRun(number, start_ticks, tuple(current)))
    return runs


def trim_window(rendition: LiveRendition, first_number: int) -> LiveRendition:
    """``rendition`` without its segments numbered below ``first_number``, counting the
    discontinuities removed (RFC 8216bis 4.4.3.3: the server MUST increment
    EXT-X-DISCONTINUITY-SEQUENCE when it removes an EXT-X-DISCONTINUITY) and keeping
    the Period of the first segment left."""
    kept = tuple(s for s in rendition.segments if s.number >= first_number)
    dropped = [s for s in rendition.segments if s.number < first_number]
    if not dropped:
        return rendition
    runs = split_periods(rendition)
    run = runs[-1]
    if kept:
        run = next(r for r in runs if kept[0] in r.segments)
    return replace(
        rendition,
        segments=kept,
        discontinuity_sequence=rendition.discontinuity_sequence
        + sum(1 for s in dropped if s.discontinuity),
        period_number=run.number,
        period_start_ticks=run.start_ticks,
    )


@dataclass(frozen=True, slots=True)
class GapRun:
    """A run of consecutive gap parts (the stalled input's silence)."""

    start_ticks: int
    duration_ticks: int
    # Media follows it in the window, or the stream ended: its duration is final.  A
    # run still growing at the live edge has no duration yet (a marker with an id must
    # not change an attribute it already stated: RFC 8216bis 4.4.5.1).
    closed: bool


def gap_runs(segments: Sequence[LiveSegment], *, ended: bool) -> list[GapRun]:
    """The runs of gap parts in ``segments``, oldest first."""
    runs: list[GapRun] = []
    for s in segments:
        at = s.start_ticks
        for part in s.parts:
            last = runs[-1] if runs else None
            if not (part.gap or s.gap):
                if last is not None and not last.closed:
                    runs[-1] = replace(last, closed=True)
            elif last is not None and not last.closed:
                runs[-1] = replace(last, duration_ticks=last.duration_ticks + part.duration_ticks)
            else:
                runs.append(GapRun(at, part.duration_ticks, closed=False))
            at += part.duration_ticks
    if ended and runs:
        runs[-1] = replace(runs[-1], closed=True)
    return runs


def window_start_number(rendition: LiveRendition, window_us: int) -> int:
    """The number of the oldest segment to keep so the window holds at least
    ``window_us`` of the newest media (open segment included)."""
    if not rendition.segments:
        return 1
    last = rendition.segments[-1]
    end_ticks = last.start_ticks + last.duration_ticks
    for segment in reversed(rendition.segments):
        if (end_ticks - segment.start_ticks) * 1_000_000 >= window_us * rendition.timescale:
            return segment.number
    return rendition.segments[0].number


def last_position(rendition: LiveRendition) -> tuple[int, int] | None:
    """The newest part: (its segment's media sequence number, its index), None before
    the first part (RFC 8216bis 4.4.5.4 LAST-MSN and LAST-PART)."""
    for segment in reversed(rendition.segments):
        if segment.parts:
            return segment.number, segment.parts[-1].index
    return None


def has_position(rendition: LiveRendition, msn: int, part: int | None = None) -> bool:
    """Whether a blocking playlist reload for ``_HLS_msn=msn`` (and ``_HLS_part=part``)
    can be answered (RFC 8216bis 6.2.5.2): the playlist holds segment ``msn`` complete
    or a later one, or, with a part, part ``part`` of segment ``msn`` or anything
    later."""
    if not rendition.segments:
        return False
    for segment in reversed(rendition.segments):
        if segment.number < msn:
            return False
        if segment.number == msn:
            later = segment is not rendition.segments[-1]
            if later or segment.complete:
                return True
            return part is not None and len(segment.parts) > part
    return True  # msn is older than the window


def next_part(rendition: LiveRendition) -> tuple[int, int]:
    """(media sequence number, part index) of the next part to be written."""
    if not rendition.segments:
        return 1, 0
    last = rendition.segments[-1]
    if last.complete:
        return last.number + 1, 0
    return last.number, len(last.parts)


# RFC 8216bis 6.2.5.2: a request for a segment more than this many past the playlist's
# last one is answered 400 at once, not held.
MSN_AHEAD_LIMIT = 2


def too_far_ahead(rendition: LiveRendition, msn: int) -> bool:
    """Whether ``_HLS_msn`` is more than two past the last segment in the playlist (the
    open one counts), which the server answers with 400 Bad Request at once rather than
    holding it (RFC 8216bis 6.2.5.2)."""
    last = rendition.segments[-1].number if rendition.segments else 0
    return msn > last + MSN_AHEAD_LIMIT
