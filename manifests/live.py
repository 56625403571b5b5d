"""The pure model of a live stream: what ``cadenza live`` has written so far, and
what the origin renders LL-HLS playlists and a dynamic MPD from.

Times are integer ticks in each rendition's timescale (its sample rate); the
stream-wide durations are integer microseconds, and wall-clock instants integer
milliseconds since the Unix epoch.  Tick 0 of every rendition is the instant
``availability_start_ms``: a segment's program date-time (RFC 8216bis 4.4.4.6) and
its DASH availability (ISO/IEC 23009-1 5.3.9.5) both follow from its start.

File layout of one live track (``<track_id>/``), beside the VOD names::

    live.json                      this model (cadenza.manifests.live_json), rewritten
                                   atomically after every part
    master.m3u8, manifest.mpd      written once the renditions are known
    <rendition>/init-<n>.mp4       init segment n (a new one after a format change)
    <rendition>/seg-00042.p3.m4s   part 3 (from 0) of segment 42: one CMAF chunk
    <rendition>/seg-00042.m4s      the whole segment, its parts' bytes end to end,
                                   written when its last part is
    <rendition>/playlist.m3u8      the media playlist as of the last part

Media sequence numbers count segments from 1 since the stream started and never
restart; the DVR window keeps the newest segments (older files are removed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LIVE_STATE_NAME: Final = "live.json"
LIVE_INIT_TEMPLATE: Final = "init-{init}.mp4"
LIVE_PART_TEMPLATE: Final = "seg-{number:05d}.p{part}.m4s"
LIVE_SEGMENT_TEMPLATE: Final = "seg-{number:05d}.m4s"


@dataclass(frozen=True, slots=True)
class LivePart:
    """One CMAF chunk (a ``moof`` + ``mdat``) of a segment; every audio part is an
    independent frame boundary (``INDEPENDENT=YES``)."""

    index: int  # from 0 within its segment
    duration_ticks: int
    size_bytes: int
    # The input stalled across it: the rungs encoded silence, so the file exists and
    # the timeline stays continuous; marked by an EXT-X-DATERANGE and a DASH Event.
    gap: bool = False

    def name(self, segment_number: int) -> str:
        return LIVE_PART_TEMPLATE.format(number=segment_number, part=self.index)


@dataclass(frozen=True, slots=True)
class LiveSegment:
    number: int  # media sequence number, from 1, never reused
    start_ticks: int  # since availability_start_ms, in the rendition's timescale
    parts: tuple[LivePart, ...]
    complete: bool  # its last part is written, and so is the whole-segment file
    init: int  # which init segment it needs (LIVE_INIT_TEMPLATE)
    # The input stalled across all of this segment's time: every part is a gap.  Its
    # file holds the silence the rungs encoded, so a player plays through the stall
    # (a DASH one numbering segments from the clock never meets a missing segment).
    gap: bool = False
    # A format change (rate, layout) or a restarted input precedes it:
    # EXT-X-DISCONTINUITY, and a new DASH Period.
    discontinuity: bool = False

    @property
    def duration_ticks(self) -> int:
        return sum(p.duration_ticks for p in self.parts)

    @property
    def name(self) -> str:
        return LIVE_SEGMENT_TEMPLATE.format(number=self.number)

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.parts)


@dataclass(frozen=True, slots=True)
class LiveRendition:
    id: str
    codec: str  # cadenza.manifests.model.Codec value: "aac", "opus", "flac"
    codecs: str  # RFC 6381 string
    sample_rate_hz: int
    channels: int
    timescale: int  # = sample_rate_hz
    bitrate_bps: int  # the rung's target (FLAC: its PCM rate)
    frame_ticks: int  # codec frame: parts and segments are whole frames
    segments: tuple[LiveSegment, ...]  # the DVR window, oldest first; the last may be open
    # What left the window, kept by cadenza.manifests.live_window.trim_window:
    # EXT-X-DISCONTINUITY-SEQUENCE (RFC 8216bis 4.4.3.3), the discontinuities removed;
    discontinuity_sequence: int = 0
    # the number and start of the segment that began the DASH Period the window's first
    # segment belongs to (the Period's id and start; ISO/IEC 23009-1 5.3.2).
    period_number: int = 1
    period_start_ticks: int = 0

    @property
    def init_name(self) -> str:
        """The init segment of the newest segment."""
        init = self.segments[-1].init if self.segments else 0
        return LIVE_INIT_TEMPLATE.format(init=init)


@dataclass(frozen=True, slots=True)
class LivePresentation:
    track_id: str
    renditions: tuple[LiveRendition, ...]
    availability_start_ms: int  # wall clock of tick 0
    part_target_us: int  # EXT-X-PART-INF PART-TARGET; DASH availabilityTimeOffset
    segment_target_us: int  # EXT-X-TARGETDURATION (rounded up to whole seconds there)
    window_us: int  # the DVR window kept (timeShiftBufferDepth)
    updated_ms: int  # wall clock of the last write
    ended: bool  # EXT-X-ENDLIST, MPD type="static"
    version: int = 1  # of this model's JSON

    def rendition(self, rendition_id: str) -> LiveRendition:
        for rendition in self.renditions:
            if rendition.id == rendition_id:
                return rendition
        raise KeyError(rendition_id)


def ticks_to_us(ticks: int, timescale: int) -> int:
    return ticks * 1_000_000 // timescale


def segment_start_ms(
    presentation: LivePresentation, rendition: LiveRendition, segment: LiveSegment
) -> int:
    """The segment's program date-time: wall-clock milliseconds of its first sample."""
    return presentation.availability_start_ms + segment.start_ticks * 1000 // rendition.timescale
