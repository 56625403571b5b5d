"""ABR guidance into the channels players honour: pure functions, no HTTP.

What :func:`cadenza.abr.policy.decide` recommends for a session reaches the
player two ways:

- A per-session presentation: renditions above the recommended cap removed
  (no player selects a rendition it is not offered), and the recommended
  start rendition listed first.  Listing it first does not steer hls.js on
  an audio ladder at or below 500 kb/s (it starts at the highest rung under
  its 500 kb/s default estimate whatever the order; RFC 8216 4.3.4.2 leaves
  the choice to the client), nor dash.js or Shaka (they sort by bandwidth).
  The start rung reaches hls.js only as ``startLevel`` set by the page, and
  dash.js as the MPD ServiceDescription OperatingBandwidth ``target``; both
  only when :attr:`~cadenza.abr.policy.Guidance.start_hint` is set.  See
  ``docs/player-models.md``.
- CMSD (CTA-5006) response headers: ``CMSD-Static`` describes the object
  (``ot``, ``br``, ``d``, ``st``) and ``CMSD-Dynamic`` carries this server's
  estimated throughput for the session (``etp``, kb/s) and the maximum
  suggested bitrate (``mb``, kb/s).  dash.js reads CMSD only when the page
  enables it (``streaming.cmsd.enabled``, ``etpWeightRatio`` > 0) and applies
  ``mb`` to video only; hls.js does not read CMSD; Shaka reads both by
  default (``mb`` caps audio too).
"""

from __future__ import annotations

import dataclasses
import re
from enum import StrEnum
from typing import Final

from cadenza.abr.policy import Guidance
from cadenza.manifests.model import BitrateHint, Codec, Presentation, Rendition

SERVER_ID: Final = "cadenza"
_NUMBER_RE: Final = re.compile(r"(\d+)")


def rendition_bitrate_bps(rendition: Rendition) -> int:
    if rendition.target_bitrate_bps is not None:
        return rendition.target_bitrate_bps
    return rendition.average_bitrate_bps


def primary_codec(presentation: Presentation) -> Codec:
    """The codec whose rungs guidance works on: the first lossy one listed."""
    for rendition in presentation.renditions:
        if rendition.codec is not Codec.FLAC:
            return rendition.codec
    return presentation.renditions[0].codec


def ladder_bps(presentation: Presentation, codec: Codec | None = None) -> list[int]:
    """Ascending bitrates of one codec's rungs (the primary codec by default)."""
    codec = codec or primary_codec(presentation)
    return sorted({rendition_bitrate_bps(r) for r in presentation.renditions if r.codec is codec})


def bitrate_hint(presentation: Presentation, guidance: Guidance) -> BitrateHint | None:
    """The guidance's start and cap as the manifests carry them to players (DASH
    ``ServiceDescription``/``OperatingBandwidth``, HLS ``EXT-X-SESSION-DATA``), or None
    when the start is not worth hinting (:attr:`~cadenza.abr.policy.Guidance.start_hint`).

    In the unit the players compare them with: a rendition's advertised bandwidth (DASH
    ``@bandwidth``, HLS ``BANDWIDTH``: the measured peak), not its nominal bitrate.
    dash.js drops every Representation whose ``@bandwidth`` is above ``max`` and starts
    from the highest at or below ``target``; a nominal 320000 against a 3xx,xxx peak
    would drop the very rung the cap allows, and a nominal target would start one rung
    low.  ``max`` is the largest peak among the rungs the cap allows; ``target`` the
    start rung's peak (the lowest rung's when none is at or below the start).
    """
    if not guidance.start_hint:
        return None
    codec = primary_codec(presentation)
    rungs = sorted(
        (rendition_bitrate_bps(r), r.peak_bitrate_bps)
        for r in presentation.renditions
        if r.codec is codec
    )
    if not rungs:
        return None
    allowed = [peak for nominal, peak in rungs if nominal <= guidance.max_bitrate_bps]
    started = [peak for nominal, peak in rungs if nominal <= guidance.start_bitrate_bps]
    max_bps = max(allowed or [rungs[0][1]])
    start_bps = min(started[-1] if started else rungs[0][1], max_bps)
    return BitrateHint(start_bps, max_bps)


def guide_presentation(presentation: Presentation, guidance: Guidance) -> Presentation:
    """Cap every codec at the guidance's max bitrate and list the start rung first.

    A codec with every rung above the cap (FLAC, usually) is dropped, unless
    nothing would be left (a ``?codec=flac`` request): then each codec keeps
    its lowest rung, so a filtered manifest is never empty.
    """
    codec = primary_codec(presentation)
    kept = [
        r for r in presentation.renditions if rendition_bitrate_bps(r) <= guidance.max_bitrate_bps
    ]
    if not kept:
        for candidate in {r.codec for r in presentation.renditions}:
            rungs = [r for r in presentation.renditions if r.codec is candidate]
            kept.append(min(rungs, key=rendition_bitrate_bps))
    order = {r.id: index for index, r in enumerate(presentation.renditions)}
    kept.sort(key=lambda r: order[r.id])
    start = [
        r
        for r in kept
        if r.codec is codec and rendition_bitrate_bps(r) == guidance.start_bitrate_bps
    ]
    if start:
        kept.remove(start[0])
        kept.insert(0, start[0])
    return dataclasses.replace(presentation, renditions=tuple(kept))


def segment_duration_ms(rendition: Rendition, file_name: str) -> int | None:
    """The duration of the numbered segment ``file_name``, in milliseconds."""
    match = _NUMBER_RE.search(file_name)
    if match is None:
        return None
    number = int(match.group(1))
    segments = rendition.segments
    if not segments:
        return None
    # Numbers run consecutively from the first: index directly (a 3-hour
    # rendition has thousands of segments, and this runs per request).
    index = number - segments[0].number
    if 0 <= index < len(segments) and segments[index].number == number:
        return segments[index].duration_ticks * 1000 // rendition.timescale
    for segment in segments:
        if segment.number == number:
            return segment.duration_ticks * 1000 // rendition.timescale
    return None


class CmsdStreamType(StrEnum):
    """CMSD ``st`` (CTA-5006 4.2): the stream the object belongs to."""

    VOD = "v"
    LIVE = "l"


def cmsd_static(rendition: Rendition, duration_ms: int | None) -> str:
    """``CMSD-Static`` for an audio object of a VOD presentation (CTA-5006 4.2)."""
    return cmsd_static_fields(rendition_bitrate_bps(rendition), duration_ms, CmsdStreamType.VOD)


def cmsd_static_fields(
    bitrate_bps: int, duration_ms: int | None, stream_type: CmsdStreamType
) -> str:
    """``CMSD-Static`` of an audio object (CTA-5006 4.2): ``ot=a``, its encoded
    bitrate ``br`` and duration ``d`` (kb/s, ms), and the stream type ``st``."""
    parts = ["ot=a", f"br={bitrate_bps // 1000}"]
    if duration_ms is not None:
        parts.append(f"d={duration_ms}")
    parts.append(f"st={stream_type.value}")
    return ",".join(parts)


def cmsd_dynamic(estimate_bps: float, max_bitrate_bps: int | None) -> str:
    """``CMSD-Dynamic``: this server's identifier with ``etp`` and ``mb`` in kb/s."""
    value = f'"{SERVER_ID}";etp={max(1, round(estimate_bps / 1000))}'
    if max_bitrate_bps is not None:
        value += f";mb={max_bitrate_bps // 1000}"
    return value
