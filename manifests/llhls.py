"""Low-Latency HLS playlists of a live stream (draft-pantos-hls-rfc8216bis-16, and
Apple's "Enabling Low-Latency HTTP Live Streaming"), rendered from the
:mod:`cadenza.manifests.live` model.  Pure: the origin renders them per request.

The media playlist, in the order the draft lists its tags:

- ``EXT-X-VERSION`` 9 when it holds parts or a skip (4.4.5.2 and section 8: a
  playlist with EXT-X-SKIP needs version 9), else 7;
- ``EXT-X-TARGETDURATION`` (4.4.3.1): the segment target rounded up to whole seconds,
  and never below a segment's EXTINF rounded to the nearest second;
- ``EXT-X-SERVER-CONTROL`` (4.4.3.8): ``CAN-BLOCK-RELOAD=YES``, ``PART-HOLD-BACK``
  three times the part target (it MUST be at least twice and SHOULD be three times),
  ``CAN-SKIP-UNTIL`` six times the target duration (its minimum);
- ``EXT-X-PART-INF`` (4.4.3.7): ``PART-TARGET``, the part target or the longest part
  listed if longer (parts are whole codec frames, and no part may exceed it);
- ``EXT-X-MEDIA-SEQUENCE`` (4.4.3.2): the window's first segment, skipped ones
  included; ``EXT-X-DISCONTINUITY-SEQUENCE`` (4.4.3.3) when a discontinuity has been
  in the stream;
- per segment: ``EXT-X-DISCONTINUITY`` (4.4.4.3), ``EXT-X-MAP`` (4.4.4.5) at the
  first segment listed and whenever the init segment changes,
  ``EXT-X-PROGRAM-DATE-TIME`` (4.4.4.6) on every segment, the ``EXT-X-PART`` tags
  (4.4.4.9) of the segments that end less than three target durations from the end
  of the playlist (older ones SHOULD be removed), then ``EXTINF`` and the URI once the
  segment is complete;
- the stalled input's silence: an ``EXT-X-DATERANGE`` (4.4.5.1) per run of gap parts,
  not ``EXT-X-GAP`` / ``GAP=YES``.  Those say a segment or part "does not contain media
  data" and should not be loaded (4.4.4.7, 4.4.4.9), and these hold the silence the
  rungs encoded: a player skipping them has nothing to play and stalls (hls.js 1.7.4
  did, and on a loaded machine fell 5-20 s behind for good), while one loading them
  plays on at its latency, as a DASH player does;
- ``EXT-X-PRELOAD-HINT`` (4.4.5.3) for the next part, unless the stream ended, then
  ``EXT-X-RENDITION-REPORT`` (4.4.5.4) for every other rendition listed in the
  multivariant playlist, and ``EXT-X-ENDLIST`` (4.4.3.4) when the stream ended.

A delta update (``_HLS_skip=YES``, 6.2.5.1) replaces the segments that end at least
``CAN-SKIP-UNTIL`` before the end of the playlist with ``EXT-X-SKIP:SKIPPED-SEGMENTS``
(4.4.5.2); with none that old it is the whole playlist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

from cadenza.manifests.channels import hls_channel_count
from cadenza.manifests.hls import (
    VERSION,
    content_steering_tag,
    decimal_seconds,
    steered_variants,
    stream_inf_tag,
)
from cadenza.manifests.live import (
    LIVE_INIT_TEMPLATE,
    LIVE_PART_TEMPLATE,
    LivePresentation,
    LiveRendition,
    LiveSegment,
    segment_start_ms,
)
from cadenza.manifests.live_window import (
    gap_runs,
    has_position,
    last_position,
    next_part,
    too_far_ahead,
)
from cadenza.manifests.model import PLAYLIST_NAME
from cadenza.manifests.steering import SteeringConfig

# The blocking-reload helpers live with the window (cadenza.manifests.live_window) and
# are re-exported here, beside the playlist they answer for.
__all__ = [
    "has_position",
    "last_position",
    "listed_renditions",
    "live_bitrates_bps",
    "next_part",
    "part_target_us",
    "program_date_time",
    "render_live_master",
    "render_live_media_playlist",
    "target_duration_s",
    "too_far_ahead",
]

LL_VERSION = 9
PART_HOLD_BACK_PARTS = 3  # 4.4.3.8: PART-HOLD-BACK SHOULD be >= 3 part targets
SKIP_TARGET_DURATIONS = 6  # 4.4.3.8: CAN-SKIP-UNTIL MUST be >= 6 target durations
PART_TARGET_DURATIONS_KEPT = 3  # 4.4.4.9: parts older than 3 target durations go
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# EXT-X-DATERANGE CLASS of a stalled input's silence (4.4.5.1: reverse-DNS, ours).
GAP_DATERANGE_CLASS = "com.cadenza.live.gap"


def program_date_time(ms: int) -> str:
    """An ISO 8601 date-time with milliseconds and a time zone (4.4.4.6)."""
    instant = _EPOCH + timedelta(milliseconds=ms)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def target_duration_s(p: LivePresentation, r: LiveRendition) -> int:
    """4.4.3.1: every EXTINF rounded to the nearest integer is <= the target."""
    target = -(-p.segment_target_us // 1_000_000)
    longest = max(
        (_round_half_up(Fraction(s.duration_ticks, r.timescale)) for s in r.segments if s.complete),
        default=0,
    )
    return max(target, longest, 1)


def _round_half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


def part_target_us(p: LivePresentation, r: LiveRendition) -> int:
    """The PART-TARGET in microseconds: no part is longer (4.4.3.7)."""
    longest = max(
        (
            -(-part.duration_ticks * 1_000_000 // r.timescale)
            for s in r.segments
            for part in s.parts
        ),
        default=0,
    )
    return max(p.part_target_us, longest)


def _us(value_us: int) -> str:
    return decimal_seconds(value_us, 1_000_000)


def listed_renditions(p: LivePresentation) -> list[LiveRendition]:
    """The renditions a multivariant playlist lists: one channel count (stereo when
    there is one; :func:`cadenza.manifests.channels.hls_channel_count`)."""
    count = hls_channel_count(r.channels for r in p.renditions)
    return [r for r in p.renditions if r.channels == count]


def live_bitrates_bps(r: LiveRendition) -> tuple[int, int]:
    """(peak, average) over the complete segments with media, never below the rung's
    target; the target for both before the first one."""
    rates = [
        Fraction(s.size_bytes * 8 * r.timescale, s.duration_ticks)
        for s in r.segments
        if s.complete and not s.gap and s.duration_ticks
    ]
    if not rates:
        return r.bitrate_bps, r.bitrate_bps
    peak = max(r.bitrate_bps, int(max(rates).__ceil__()))
    return peak, int((sum(rates) / len(rates)).__ceil__())


def render_live_master(p: LivePresentation, steering: SteeringConfig | None = None) -> str:
    """The multivariant playlist: one variant per rendition, as VOD's
    (:func:`cadenza.manifests.hls.render_master`); ``BANDWIDTH`` is the highest
    segment bitrate seen in the window (4.3.4.2), at least the rung's target.  With
    ``steering``, the content steering tag and every variant once per pathway, as
    VOD's."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    variants = [
        (r.id, stream_inf_tag(*live_bitrates_bps(r), r.codecs), f"{r.id}/{PLAYLIST_NAME}")
        for r in listed_renditions(p)
    ]
    if steering is None:
        for _, stream_inf, uri in variants:
            lines += [stream_inf, uri]
    else:
        lines.append(content_steering_tag(steering))
        lines += steered_variants(steering, p.track_id, variants)
    return "\n".join(lines) + "\n"


def _end_ticks(r: LiveRendition) -> int:
    if not r.segments:
        return 0
    last = r.segments[-1]
    return last.start_ticks + last.duration_ticks


def _skipped(r: LiveRendition, skip_until_us: int) -> int:
    """How many leading segments end at least ``skip_until_us`` before the end."""
    end = _end_ticks(r)
    count = 0
    for s in r.segments:
        if not s.complete:
            break
        age_ticks = end - (s.start_ticks + s.duration_ticks)
        if age_ticks * 1_000_000 < skip_until_us * r.timescale:
            break
        count += 1
    return count


def _keeps_parts(r: LiveRendition, s: LiveSegment, target_s: int) -> bool:
    age_ticks = _end_ticks(r) - (s.start_ticks + s.duration_ticks)
    return not s.complete or age_ticks < PART_TARGET_DURATIONS_KEPT * target_s * r.timescale


def _segment_lines(
    p: LivePresentation, r: LiveRendition, s: LiveSegment, map_needed: bool, target_s: int
) -> list[str]:
    lines = ["#EXT-X-DISCONTINUITY"] if s.discontinuity else []
    if map_needed:
        lines.append(f'#EXT-X-MAP:URI="{LIVE_INIT_TEMPLATE.format(init=s.init)}"')
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment_start_ms(p, r, s))}")
    if _keeps_parts(r, s, target_s):
        for part in s.parts:
            lines.append(
                f"#EXT-X-PART:DURATION={decimal_seconds(part.duration_ticks, r.timescale)},"
                f'URI="{part.name(s.number)}",INDEPENDENT=YES'
            )
    if s.complete:
        lines.append(f"#EXTINF:{decimal_seconds(s.duration_ticks, r.timescale)},")
        lines.append(s.name)
    return lines


def render_live_media_playlist(
    p: LivePresentation, rendition_id: str, *, skip: bool = False, now_ms: int
) -> str:
    """The media playlist of one rendition as the model stands (see the module
    docstring); ``skip``: the delta update asked for by ``_HLS_skip=YES``.
    ``now_ms`` is taken for symmetry with the MPD: the playlist changes only when
    media is added (6.2.2), so it depends on the model alone.

    Raises ``KeyError`` for an unknown rendition."""
    del now_ms
    r = p.rendition(rendition_id)
    target_s = target_duration_s(p, r)
    skip_until_us = SKIP_TARGET_DURATIONS * target_s * 1_000_000
    skipped = _skipped(r, skip_until_us) if skip else 0
    has_parts = any(s.parts for s in r.segments)
    first_number = r.segments[0].number if r.segments else next_part(r)[0]
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{LL_VERSION if has_parts or skipped else VERSION}",
        f"#EXT-X-TARGETDURATION:{target_s}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={_us(PART_HOLD_BACK_PARTS * part_target_us(p, r))},"
        f"CAN-SKIP-UNTIL={_us(skip_until_us)}",
        f"#EXT-X-PART-INF:PART-TARGET={_us(part_target_us(p, r))}",
        f"#EXT-X-MEDIA-SEQUENCE:{first_number}",
    ]
    if r.discontinuity_sequence or any(s.discontinuity for s in r.segments):
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{r.discontinuity_sequence}")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    lines.extend(_gap_dateranges(p, r))
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    previous_init: int | None = None
    for s in r.segments[skipped:]:
        lines.extend(_segment_lines(p, r, s, s.init != previous_init, target_s))
        previous_init = s.init
    if p.ended:
        lines.append("#EXT-X-ENDLIST")
    else:
        msn, index = next_part(r)
        hint = LIVE_PART_TEMPLATE.format(number=msn, part=index)
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
    lines.extend(_rendition_reports(p, r))
    return "\n".join(lines) + "\n"


def _gap_dateranges(p: LivePresentation, r: LiveRendition) -> list[str]:
    """An ``EXT-X-DATERANGE`` (4.4.5.1) per run of gap parts in the window, so a gap
    shorter than a segment stays marked once its parts leave the playlist; all of them,
    delta update or not (6.2.5.1: a delta update keeps its date ranges unless the
    server offers to skip them, which this one does not)."""
    lines = []
    for gap in gap_runs(r.segments, ended=p.ended):
        start_ms = p.availability_start_ms + gap.start_ticks * 1000 // r.timescale
        line = (
            f'#EXT-X-DATERANGE:ID="gap-{gap.start_ticks}",CLASS="{GAP_DATERANGE_CLASS}",'
            f'START-DATE="{program_date_time(start_ms)}"'
        )
        if gap.closed:
            line += f",DURATION={decimal_seconds(gap.duration_ticks, r.timescale)}"
        lines.append(line)
    return lines


def _rendition_reports(p: LivePresentation, r: LiveRendition) -> list[str]:
    """4.4.5.4: the newest part of each other rendition, for a player switching to it."""
    lines = []
    for other in listed_renditions(p):
        position = last_position(other)
        if other.id == r.id or position is None:
            continue
        lines.append(
            f'#EXT-X-RENDITION-REPORT:URI="../{other.id}/{PLAYLIST_NAME}",'
            f"LAST-MSN={position[0]},LAST-PART={position[1]}"
        )
    return lines
