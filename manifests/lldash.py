"""The low-latency DASH MPD of a live stream (ISO/IEC 23009-1, and the DASH-IF
"Low-latency Modes for DASH" guidelines), rendered from the
:mod:`cadenza.manifests.live` model.  Pure: the origin renders it per request.

- ``type="dynamic"`` (5.4) while the stream runs, with ``availabilityStartTime`` (tick 0
  of every rendition), ``publishTime`` (the model's last write, so an unchanged stream
  renders the same MPD), ``minimumUpdatePeriod`` (the part target: a stall or a
  discontinuity ends the open Period, and a player refreshing once a segment would learn
  of it up to a segment late, past a one-second latency target), ``timeShiftBufferDepth``
  (the DVR window) and
  ``suggestedPresentationDelay`` (the latency target).  ``type="static"`` with
  ``mediaPresentationDuration`` once it ended.
- An MPD-level ``ServiceDescription`` (K.4; DASH-IF low latency 9.X.4.2) with
  ``Latency`` ``target``/``min``/``max`` in milliseconds and ``PlaybackRate``
  ``min``/``max`` for catch-up (an audio player may drift a few per cent without
  an audible change of pitch), and a ``UTCTiming`` element
  (``urn:mpeg:dash:utc:http-iso:2014``, 5.8.5.7) pointing at the origin's clock, so
  a player computes segment availability on the server's time.
- One ``AdaptationSet`` per codec and channel count, as VOD's MPD
  (:func:`cadenza.manifests.dash.adaptation_set_keys`), one ``Representation`` per
  rendition with ``BaseURL`` ``<rendition>/`` and a ``SegmentTemplate``:
  ``$Number$`` media (``seg-$Number%05d$.m4s``), ``startNumber`` and
  ``presentationTimeOffset`` (the Period's start).  The open Period, while all its
  segments lie on one grid, is addressed by ``@duration`` (5.3.9.5.3): a player works
  out from the clock which segment is available and asks for it at once.  Measured in
  dash.js 5.2.1 on loopback, that took the median latency from 1.95 s with 5 stalls in
  2 minutes (a ``SegmentTimeline``, learnt from an MPD refreshed every part) to about
  1.0 s with none.  Every other Period (ended by a stall or a discontinuity) and an
  ended stream get a ``SegmentTimeline`` of their segments.  While
  live, ``availabilityTimeOffset`` is the segment target less the part target and
  ``availabilityTimeComplete="false"`` (5.3.9.5.3): a segment may be requested once
  its first part exists, and the origin answers it with chunked transfer as the
  parts arrive.
- Periods (:func:`cadenza.manifests.live_window.split_periods`): a discontinuity
  begins a new Period, whose id is the number of the segment that began it and whose
  start is that segment's start.  A stall does not: its gap parts hold the silence
  encoded while the input gave nothing, so a player numbering segments from the clock
  never meets a missing one, and plays on.  Each run of gap parts is marked by an
  ``Event`` (5.10.2) in the Period's ``EventStream`` of scheme
  :data:`GAP_EVENT_SCHEME`, with its presentation time and duration, as EXT-X-GAP
  and ``GAP=YES`` mark it in the playlists.

Element order follows the schema's sequences; every MPD rendered here validates
against the official XSD (tests/data/schemas).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

from cadenza.manifests.dash import (
    CHANNEL_SCHEME,
    NS,
    PROFILE_LIVE,
    adaptation_set_keys,
    add_content_steering,
    add_pathway_base_urls,
    add_timeline,
    channels_label,
    mpd_text,
    qname,
)
from cadenza.manifests.hls import decimal_seconds
from cadenza.manifests.live import (
    LIVE_INIT_TEMPLATE,
    LivePresentation,
    LiveRendition,
    LiveSegment,
)
from cadenza.manifests.live_window import PeriodRun, gap_runs, split_periods
from cadenza.manifests.llhls import live_bitrates_bps
from cadenza.manifests.model import MEDIA_TEMPLATE, Codec
from cadenza.manifests.steering import SteeringConfig

UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
# The stalled input's silence: one Event per run of gap parts (a scheme of our own; a
# player that does not know it ignores the events, 5.10.2).
GAP_EVENT_SCHEME = "urn:cadenza:live:gap:2026"
LATENCY_FLOOR_MS = 1_000  # the latency aimed at, when parts allow it
LATENCY_PARTS = 3  # as LL-HLS's PART-HOLD-BACK: three parts behind the live edge
PLAYBACK_RATE_MIN = "0.96"
PLAYBACK_RATE_MAX = "1.04"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def xs_datetime(ms: int) -> str:
    """xs:dateTime in UTC with milliseconds."""
    instant = _EPOCH + timedelta(milliseconds=ms)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _duration(value_us: int) -> str:
    return f"PT{decimal_seconds(value_us, 1_000_000)}S"


def latency_ms(p: LivePresentation) -> tuple[int, int, int]:
    """(target, min, max) latency in milliseconds: three parts behind the live edge, but
    not under a second; min half the target (never below a part), max three times it."""
    part_ms = -(-p.part_target_us // 1000)
    target = max(LATENCY_FLOOR_MS, LATENCY_PARTS * part_ms)
    return target, max(part_ms, target // 2), 3 * target


def _nominal_ticks(p: LivePresentation, r: LiveRendition) -> int:
    """The segment target rounded up to whole codec frames: every segment's duration but
    a stream's last and one a discontinuity cuts short."""
    frames = -(-p.segment_target_us * r.timescale // (1_000_000 * r.frame_ticks))
    return max(1, frames) * r.frame_ticks


def _expected_ticks(p: LivePresentation, r: LiveRendition) -> int:
    """The open segment's duration once complete: the last complete segment's, else the
    nominal duration."""
    for s in reversed(r.segments):
        if s.complete and not s.gap:
            return s.duration_ticks
    return _nominal_ticks(p, r)


def _constant_ticks(
    p: LivePresentation,
    r: LiveRendition,
    segments: list[LiveSegment],
    first_number: int,
    start_ticks: int,
    closed: bool,
) -> int | None:
    """The one duration of a Period's segments, when it can be addressed by
    ``SegmentTemplate@duration`` (5.3.9.5.3) rather than a ``SegmentTimeline``: every
    segment lies on one grid from the Period's start, the complete ones all of one
    duration (the nominal one while none is complete) but for a closed Period's last
    (a discontinuity may cut it short: the next Period's start ends it), the open one
    not past it.  None otherwise.  Gap segments count: they hold the encoded silence.

    A player then computes from the clock which segment is available (its end less
    ``availabilityTimeOffset``) and asks for it without waiting for an MPD that lists it:
    with a timeline, dash.js learns of a segment only from a refreshed MPD, which on a
    one-second latency target is late at every segment boundary."""
    if not segments:
        return None
    last = segments[-1] if closed else None
    complete = {s.duration_ticks for s in segments if s.complete and s is not last}
    if len(complete) > 1:
        return None
    duration = complete.pop() if complete else _nominal_ticks(p, r)
    for s in segments:
        if s.start_ticks != start_ticks + (s.number - first_number) * duration:
            return None
        if s.duration_ticks > duration:
            return None
    return duration


def _period_bounds(runs: list[PeriodRun], index: int) -> tuple[int, int | None]:
    """[first, last) segment numbers of Period ``index``."""
    run = runs[index]
    first = run.segments[0].number if run.segments else run.number
    following = runs[index + 1] if index + 1 < len(runs) else None
    return first, None if following is None else following.segments[0].number


def _start_ticks(r: LiveRendition, run: PeriodRun, reference: LiveRendition) -> int:
    """The Period's start in ``r``'s timescale: where ``r``'s own segment that began it
    starts, when known."""
    for s in r.segments:
        if s.number == run.number:
            return s.start_ticks
    if r.period_number == run.number:
        return r.period_start_ticks
    return run.start_ticks * r.timescale // reference.timescale


def _head(p: LivePresentation, steering: SteeringConfig | None) -> etree._Element:
    """The MPD element with its attributes and, in the schema's order, the pathways'
    ``BaseURL``s, the ``ServiceDescription`` and ``ContentSteering``."""
    nsmap: dict[Any, str] = {None: NS}
    mpd = etree.Element(qname("MPD"), nsmap=nsmap)
    mpd.set("profiles", PROFILE_LIVE)
    mpd.set("availabilityStartTime", xs_datetime(p.availability_start_ms))
    mpd.set("publishTime", xs_datetime(p.updated_ms))
    mpd.set("minBufferTime", _duration(p.segment_target_us))
    if p.ended:
        mpd.set("type", "static")
        end_us = max((_end_us(r) for r in p.renditions), default=0)
        mpd.set("mediaPresentationDuration", _duration(end_us))
        if steering is not None:
            add_pathway_base_urls(mpd, steering, p.track_id)
            add_content_steering(mpd, steering)
        return mpd
    target, low, high = latency_ms(p)
    mpd.set("type", "dynamic")
    mpd.set("minimumUpdatePeriod", _duration(p.part_target_us))
    mpd.set("timeShiftBufferDepth", _duration(p.window_us))
    mpd.set("suggestedPresentationDelay", _duration(target * 1000))
    if steering is not None:
        add_pathway_base_urls(mpd, steering, p.track_id)
    service = etree.SubElement(mpd, qname("ServiceDescription"))
    service.set("id", "0")
    latency = etree.SubElement(service, qname("Latency"))
    latency.set("referenceId", "0")
    latency.set("target", str(target))
    latency.set("min", str(low))
    latency.set("max", str(high))
    rate = etree.SubElement(service, qname("PlaybackRate"))
    rate.set("min", PLAYBACK_RATE_MIN)
    rate.set("max", PLAYBACK_RATE_MAX)
    if steering is not None:
        add_content_steering(mpd, steering)
    return mpd


def _end_us(r: LiveRendition) -> int:
    if not r.segments:
        return 0
    last = r.segments[-1]
    return (last.start_ticks + last.duration_ticks) * 1_000_000 // r.timescale


def _template(
    rep: etree._Element,
    p: LivePresentation,
    r: LiveRendition,
    segments: list[LiveSegment],
    start_ticks: int,
    *,
    closed: bool,
    first_number: int,
) -> None:
    template = etree.SubElement(rep, qname("SegmentTemplate"))
    template.set("timescale", str(r.timescale))
    init = segments[-1].init if segments else (r.segments[-1].init if r.segments else 0)
    template.set("initialization", LIVE_INIT_TEMPLATE.format(init=init))
    template.set("media", MEDIA_TEMPLATE)
    number = segments[0].number if segments else (r.segments[-1].number + 1 if r.segments else 1)
    template.set("startNumber", str(number))
    template.set("presentationTimeOffset", str(start_ticks))
    if not p.ended:
        offset_us = max(0, p.segment_target_us - p.part_target_us)
        template.set("availabilityTimeOffset", decimal_seconds(offset_us, 1_000_000))
        template.set("availabilityTimeComplete", "false")
    constant = (
        None if p.ended else _constant_ticks(p, r, segments, first_number, start_ticks, closed)
    )
    if constant is not None:
        # Numbered from the Period's first segment, which may have left the DVR window:
        # segment n starts at presentationTimeOffset + (n - startNumber) x duration.
        template.set("startNumber", str(first_number))
        template.set("duration", str(constant))
        return
    spans = [
        (s.start_ticks, s.duration_ticks if s.complete else _expected_ticks(p, r)) for s in segments
    ]
    add_timeline(template, spans)


def _gap_events(
    period: etree._Element,
    reference: LiveRendition,
    run: PeriodRun,
    first: int,
    following: int | None,
    *,
    ended: bool,
) -> None:
    """The Period's ``EventStream`` of its gaps (schema: before the AdaptationSets);
    times in the first rendition's timescale, relative to the Period's start; an
    Event's id is its start tick since the stream began, stable across MPDs."""
    segments = [
        s
        for s in reference.segments
        if s.number >= first and (following is None or s.number < following)
    ]
    gaps = gap_runs(segments, ended=ended)
    if not gaps:
        return
    stream = etree.SubElement(period, qname("EventStream"))
    stream.set("schemeIdUri", GAP_EVENT_SCHEME)
    stream.set("timescale", str(reference.timescale))
    start = _start_ticks(reference, run, reference)
    for gap in gaps:
        event = etree.SubElement(stream, qname("Event"))
        event.set("presentationTime", str(gap.start_ticks - start))
        if gap.closed:  # a run still growing at the live edge has no duration yet
            event.set("duration", str(gap.duration_ticks))
        event.set("id", str(gap.start_ticks))


def _producer_reference_time(
    adaptation: etree._Element,
    p: LivePresentation,
    r: LiveRendition,
    run: PeriodRun,
    reference: LiveRendition,
) -> None:
    """``ProducerReferenceTime`` (5.12; the DASH-IF low-latency guidelines recommend
    it): the wall-clock instant at which the encoder took in the Period's first
    sample, and that sample's media time in ``r``'s timescale.  Tick t of every
    rendition is ``availability_start_ms`` + t, so it restates the stream's mapping
    where a player measuring its latency looks for it."""
    start_ticks = _start_ticks(r, run, reference)
    element = etree.SubElement(adaptation, qname("ProducerReferenceTime"))
    element.set("id", "0")
    element.set("type", "encoder")
    wall_ms = p.availability_start_ms + start_ticks * 1000 // r.timescale
    element.set("wallClockTime", xs_datetime(wall_ms))
    element.set("presentationTime", str(start_ticks))


def _period(mpd: etree._Element, p: LivePresentation, runs: list[PeriodRun], index: int) -> None:
    reference = p.renditions[0]
    run = runs[index]
    first, following = _period_bounds(runs, index)
    period = etree.SubElement(mpd, qname("Period"))
    period.set("id", str(run.number))
    period.set("start", f"PT{decimal_seconds(run.start_ticks, reference.timescale)}S")
    _gap_events(period, reference, run, first, following, ended=p.ended or following is not None)
    counts = {r.channels for r in p.renditions}
    keys = adaptation_set_keys((Codec(r.codec), r.channels) for r in p.renditions)
    for set_index, (codec, channels) in enumerate(keys):
        adaptation = etree.SubElement(period, qname("AdaptationSet"))
        adaptation.set("id", str(set_index))
        adaptation.set("contentType", "audio")
        adaptation.set("mimeType", "audio/mp4")
        adaptation.set("segmentAlignment", "true")
        adaptation.set("startWithSAP", "1")
        if len(counts) > 1:
            etree.SubElement(adaptation, qname("Label")).text = channels_label(channels)
        members = [r for r in p.renditions if Codec(r.codec) is codec and r.channels == channels]
        if not p.ended:
            _producer_reference_time(adaptation, p, members[0], run, reference)
        for r in members:
            segments = [
                s
                for s in r.segments
                if s.number >= first and (following is None or s.number < following)
            ]
            rep = etree.SubElement(adaptation, qname("Representation"))
            rep.set("id", r.id)
            rep.set("bandwidth", str(live_bitrates_bps(r)[0]))
            rep.set("codecs", r.codecs)
            rep.set("audioSamplingRate", str(r.sample_rate_hz))
            layout = etree.SubElement(rep, qname("AudioChannelConfiguration"))
            layout.set("schemeIdUri", CHANNEL_SCHEME)
            layout.set("value", str(r.channels))
            etree.SubElement(rep, qname("BaseURL")).text = f"{r.id}/"
            start_ticks = _start_ticks(r, run, reference)
            _template(
                rep,
                p,
                r,
                segments,
                start_ticks,
                closed=following is not None,
                first_number=run.number,
            )


def render_live_mpd(
    p: LivePresentation, *, time_url: str, steering: SteeringConfig | None = None
) -> str:
    """The MPD as the model stands (see the module docstring); ``time_url``: the
    absolute or MPD-relative URL of the origin's ISO 8601 clock; ``steering``: the
    pathways and the steering server, as in VOD's MPD.  It takes no clock: the MPD
    depends on the model alone, so every request between two writes gets the same
    document (the origin caches it by model)."""
    mpd = _head(p, steering)
    runs = split_periods(p.renditions[0])
    for index in range(len(runs)):
        _period(mpd, p, runs, index)
    if not p.ended:
        timing = etree.SubElement(mpd, qname("UTCTiming"))
        timing.set("schemeIdUri", UTC_TIMING_SCHEME)
        timing.set("value", time_url)
    return mpd_text(mpd)
