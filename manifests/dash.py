"""DASH MPDs (ISO/IEC 23009-1), rendered from the model and parsed back.

- Static MPD, one ``AdaptationSet`` per codec family: players cannot switch
  codecs inside one (5.3.3.1).
- Segmented layout: live profile, per-Representation ``BaseURL`` and a
  ``SegmentTemplate`` with a run-length ``SegmentTimeline`` (5.3.9.6).
- Single-file layout: on-demand profile, ``SegmentBase`` with ``indexRange``
  pointing at the ``sidx`` (5.3.9.2, 8.3).
- Loudness: ``SupplementalProperty`` with scheme ``urn:cadenza:loudness:2026``
  and value ``I=<LUFS> TP=<dBTP>[ LRA=<LU>]`` on each AdaptationSet.
- Content steering (optional, ``cadenza.manifests.steering``): one MPD-level ``BaseURL``
  per pathway with its ``serviceLocation``, and ``ContentSteering``.
- Per-session guidance (optional, a :class:`~cadenza.manifests.model.BitrateHint`): an
  MPD-level ``ServiceDescription`` (ISO/IEC 23009-1 5th ed. K.4; DASH-IF IOP) holding
  ``OperatingBandwidth mediaType="audio"`` with ``target`` (the start bitrate), ``max``
  and ``min`` in bit/s; dash.js takes them as its audio ``initialBitrate``,
  ``maxBitrate`` and ``minBitrate`` unless the page sets its own.
- Origin-decided playback (:func:`render_group_mpd`, ``?abr=origin``): one
  AdaptationSet per switching group of two rungs or more, holding one
  Representation: ``id`` the group id, ``bandwidth`` the group's top peak (no
  choice of the origin exceeds it), ``SegmentTemplate`` with ``initialization``
  the group's shared init segment (``aac-320k/init.mp4``, a plain immutable file)
  and ``media`` ``group-aac/seg-$Number%05d$.m4s``, each of which the origin
  answers with the rung it picks; with a session id, ``media`` ends in
  ``?sid=<id>`` (percent-encoded, so never a ``$``).

Element order follows the schema's sequences, and every MPD rendered here
validates against the official XSD (tests/data/schemas).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from lxml import etree

from cadenza.manifests.errors import ManifestParseError
from cadenza.manifests.groups import with_session
from cadenza.manifests.model import (
    INIT_NAME,
    MEDIA_TEMPLATE,
    BitrateHint,
    Codec,
    Presentation,
    Rendition,
    SegmentLayout,
    SwitchGroup,
)
from cadenza.manifests.steering import SteeringConfig

NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE_LIVE = "urn:mpeg:dash:profile:isoff-live:2011"
PROFILE_ON_DEMAND = "urn:mpeg:dash:profile:isoff-on-demand:2011"
CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
LOUDNESS_SCHEME = "urn:cadenza:loudness:2026"
MIN_BUFFER_TIME = "PT2S"


def xs_duration(ticks: int, timescale: int) -> str:
    """xs:duration with millisecond precision, rounded up so the last sample is inside."""
    millis = -((-ticks * 1000) // timescale)
    return f"PT{millis // 1000}.{millis % 1000:03d}S"


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _loudness_value(p: Presentation) -> str | None:
    if p.loudness is None:
        return None
    value = f"I={p.loudness.integrated_lufs:.1f} TP={p.loudness.true_peak_dbtp:.1f}"
    if p.loudness.loudness_range_lu is not None:
        value += f" LRA={p.loudness.loudness_range_lu:.1f}"
    return value


def _timeline(parent: etree._Element, r: Rendition) -> None:
    timeline = etree.SubElement(parent, _q("SegmentTimeline"))
    expected_start: int | None = None
    run: list[int] = []  # [t or -1, d, r]
    for segment in r.segments:
        if run and segment.duration_ticks == run[1] and segment.start_ticks == expected_start:
            run[2] += 1
        else:
            if run:
                _s(timeline, run)
            start = segment.start_ticks if segment.start_ticks != expected_start else -1
            run = [start, segment.duration_ticks, 0]
        expected_start = segment.start_ticks + segment.duration_ticks
    _s(timeline, run)


def _s(timeline: etree._Element, run: list[int]) -> None:
    element = etree.SubElement(timeline, _q("S"))
    if run[0] >= 0:
        element.set("t", str(run[0]))
    element.set("d", str(run[1]))
    if run[2]:
        element.set("r", str(run[2]))


def _representation_element(
    adaptation: etree._Element, rep_id: str, bandwidth_bps: int, r: Rendition
) -> etree._Element:
    rep = etree.SubElement(adaptation, _q("Representation"))
    rep.set("id", rep_id)
    rep.set("bandwidth", str(bandwidth_bps))
    rep.set("codecs", r.codecs)
    rep.set("audioSamplingRate", str(r.sample_rate_hz))
    channels = etree.SubElement(rep, _q("AudioChannelConfiguration"))
    channels.set("schemeIdUri", CHANNEL_SCHEME)
    channels.set("value", str(r.channels))
    return rep


def _template(parent: etree._Element, r: Rendition, initialization: str, media: str) -> None:
    template = etree.SubElement(parent, _q("SegmentTemplate"))
    template.set("timescale", str(r.timescale))
    template.set("initialization", initialization)
    template.set("media", media)
    template.set("startNumber", str(r.segments[0].number))
    _timeline(template, r)


def _representation(adaptation: etree._Element, r: Rendition) -> None:
    rep = _representation_element(adaptation, r.id, r.peak_bitrate_bps, r)
    if r.layout is SegmentLayout.SINGLE:
        if r.init_range is None or r.index_range is None:
            raise ValueError(f"{r.id}: single-file layout needs init_range and index_range")
        etree.SubElement(rep, _q("BaseURL")).text = f"{r.id}/{r.init_name}"
        base = etree.SubElement(rep, _q("SegmentBase"))
        base.set("timescale", str(r.timescale))
        base.set("indexRange", f"{r.index_range.offset_bytes}-{r.index_range.last_byte}")
        base.set("indexRangeExact", "true")
        init = etree.SubElement(base, _q("Initialization"))
        init.set("range", f"{r.init_range.offset_bytes}-{r.init_range.last_byte}")
    else:
        etree.SubElement(rep, _q("BaseURL")).text = f"{r.id}/"
        _template(rep, r, INIT_NAME, MEDIA_TEMPLATE)


def _mpd_head(
    p: Presentation, single: bool, steering: SteeringConfig | None, hint: BitrateHint | None
) -> tuple[etree._Element, etree._Element]:
    """The MPD and its Period.  Before the Period, in the order of the MPD's sequence
    (ProgramInformation, BaseURL, Location, PatchLocation, ServiceDescription, ...,
    ContentSteering, Period; see tests/data/schemas): one ``BaseURL`` per pathway,
    the ``ServiceDescription``, then ``ContentSteering``."""
    duration = xs_duration(p.duration_ticks, p.timescale)
    mpd = etree.Element(_q("MPD"), nsmap={None: NS})  # type: ignore[dict-item]
    mpd.set("profiles", PROFILE_ON_DEMAND if single else PROFILE_LIVE)
    mpd.set("type", "static")
    mpd.set("mediaPresentationDuration", duration)
    mpd.set("minBufferTime", MIN_BUFFER_TIME)
    if steering is not None:
        for pathway in steering.pathways:
            base = etree.SubElement(mpd, _q("BaseURL"))
            base.set("serviceLocation", pathway.id)
            base.text = pathway.track_url(p.track_id)
    if hint is not None:
        service = etree.SubElement(mpd, _q("ServiceDescription"))
        service.set("id", "0")
        bandwidth = etree.SubElement(service, _q("OperatingBandwidth"))
        bandwidth.set("mediaType", "audio")
        if hint.min_bitrate_bps is not None:
            bandwidth.set("min", str(hint.min_bitrate_bps))
        bandwidth.set("max", str(hint.max_bitrate_bps))
        bandwidth.set("target", str(hint.start_bitrate_bps))
    if steering is not None:
        element = etree.SubElement(mpd, _q("ContentSteering"))
        element.set("defaultServiceLocation", steering.default)
        element.set("queryBeforeStart", "true" if steering.query_before_start else "false")
        element.text = steering.server_uri
    period = etree.SubElement(mpd, _q("Period"))
    period.set("id", "0")
    period.set("start", "PT0S")
    period.set("duration", duration)
    return mpd, period


def _adaptation_set(period: etree._Element, index: int, loudness: str | None) -> etree._Element:
    adaptation = etree.SubElement(period, _q("AdaptationSet"))
    adaptation.set("id", str(index))
    adaptation.set("contentType", "audio")
    adaptation.set("mimeType", "audio/mp4")
    adaptation.set("segmentAlignment", "true")
    adaptation.set("startWithSAP", "1")
    if loudness is not None:
        prop = etree.SubElement(adaptation, _q("SupplementalProperty"))
        prop.set("schemeIdUri", LOUDNESS_SCHEME)
        prop.set("value", loudness)
    return adaptation


def _text(mpd: etree._Element) -> str:
    body: bytes = etree.tostring(mpd, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body.decode("utf-8")


def render_mpd(
    p: Presentation, steering: SteeringConfig | None = None, *, hint: BitrateHint | None = None
) -> str:
    """The MPD; with ``steering``, one MPD-level ``BaseURL`` per pathway (its
    ``serviceLocation`` the pathway id) and a ``ContentSteering`` element, so
    every Representation's relative ``BaseURL`` resolves on the chosen pathway;
    with ``hint``, a ``ServiceDescription`` carrying the session's guidance."""
    single = {r.layout for r in p.renditions} == {SegmentLayout.SINGLE}
    mpd, period = _mpd_head(p, single, steering, hint)
    loudness = _loudness_value(p)
    for index, codec in enumerate(c for c in Codec if any(r.codec is c for r in p.renditions)):
        adaptation = _adaptation_set(period, index, loudness)
        for rendition in p.renditions:
            if rendition.codec is codec:
                _representation(adaptation, rendition)
    return _text(mpd)


def group_media_template(group: SwitchGroup, session_id: str | None = None) -> str:
    """``group-aac/seg-$Number%05d$.m4s``, with ``?sid=<id>`` for a session."""
    return with_session(f"{group.folder}/{MEDIA_TEMPLATE}", session_id)


def render_group_mpd(
    p: Presentation, *, session_id: str | None = None, hint: BitrateHint | None = None
) -> str:
    """The MPD of origin-decided playback: one AdaptationSet per switching group of
    two rungs or more, each with one Representation (see the module docstring).

    Raises :class:`~cadenza.manifests.errors.NotSwitchableError` when there is none.
    """
    groups = p.switchable_groups()
    mpd, period = _mpd_head(p, False, None, hint)
    loudness = _loudness_value(p)
    for index, group in enumerate(groups):
        members = [p.rendition(i) for i in group.rendition_ids]
        # Every rung of a group has the same timeline: the top one describes the group's.
        top = members[-1]
        adaptation = _adaptation_set(period, index, loudness)
        rep = _representation_element(
            adaptation, group.id, max(r.peak_bitrate_bps for r in members), top
        )
        _template(rep, top, group.init_uri, group_media_template(group, session_id))
    return _text(mpd)


# -- parsing ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedRepresentation:
    id: str
    bandwidth_bps: int
    codecs: str
    sample_rate_hz: int
    channels: int
    timescale: int
    segment_durations_ticks: tuple[int, ...]  # empty for SegmentBase
    segment_starts_ticks: tuple[int, ...]
    index_range: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class ParsedAdaptationSet:
    id: str
    mime_type: str
    codecs: frozenset[str]
    loudness: str | None
    representations: tuple[ParsedRepresentation, ...]


@dataclass(frozen=True, slots=True)
class ParsedMpd:
    profiles: str
    duration_s: Fraction
    adaptation_sets: tuple[ParsedAdaptationSet, ...]


def parse_xs_duration(text: str) -> Fraction:
    """Only the ``PT[nH][nM][n.nS]`` forms cadenza and common packagers write."""
    if not text.startswith("PT"):
        raise ManifestParseError("DASH", f"unsupported duration {text!r}")
    rest, total = text[2:], Fraction(0)
    for unit, scale in (("H", 3600), ("M", 60), ("S", 1)):
        if unit in rest:
            number, rest = rest.split(unit, 1)
            total += Fraction(number) * scale
    return total


def _timeline_ticks(template: etree._Element) -> tuple[tuple[int, ...], tuple[int, ...]]:
    starts: list[int] = []
    durations: list[int] = []
    now = 0
    for s in template.iterfind(f"{_q('SegmentTimeline')}/{_q('S')}"):
        now = int(s.get("t", now))
        d = int(s.get("d", "0"))
        for _ in range(int(s.get("r", "0")) + 1):
            starts.append(now)
            durations.append(d)
            now += d
    return tuple(starts), tuple(durations)


def parse_mpd(text: str | bytes) -> ParsedMpd:
    try:
        root = etree.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    except etree.XMLSyntaxError as exc:
        raise ManifestParseError("DASH", f"not well-formed XML: {exc}") from exc
    if root.tag != _q("MPD"):
        raise ManifestParseError("DASH", f"root element is {root.tag}, not MPD")
    try:
        sets = []
        for adaptation in root.iterfind(f"{_q('Period')}/{_q('AdaptationSet')}"):
            reps = []
            for rep in adaptation.iterfind(_q("Representation")):
                channel = rep.find(_q("AudioChannelConfiguration"))
                template = rep.find(_q("SegmentTemplate"))
                base = rep.find(_q("SegmentBase"))
                starts, durations = _timeline_ticks(template) if template is not None else ((), ())
                timing = template if template is not None else base
                index_range = None
                if base is not None and base.get("indexRange"):
                    first, last = str(base.get("indexRange")).split("-")
                    index_range = (int(first), int(last))
                reps.append(
                    ParsedRepresentation(
                        id=str(rep.get("id")),
                        bandwidth_bps=int(str(rep.get("bandwidth"))),
                        codecs=str(rep.get("codecs")),
                        sample_rate_hz=int(str(rep.get("audioSamplingRate"))),
                        channels=int(str(channel.get("value"))) if channel is not None else 0,
                        timescale=int(str(timing.get("timescale", "1")))
                        if timing is not None
                        else 1,
                        segment_durations_ticks=durations,
                        segment_starts_ticks=starts,
                        index_range=index_range,
                    )
                )
            prop = adaptation.find(_q("SupplementalProperty"))
            sets.append(
                ParsedAdaptationSet(
                    id=str(adaptation.get("id")),
                    mime_type=str(adaptation.get("mimeType")),
                    codecs=frozenset(r.codecs for r in reps),
                    loudness=prop.get("value") if prop is not None else None,
                    representations=tuple(reps),
                )
            )
        return ParsedMpd(
            profiles=str(root.get("profiles")),
            duration_s=parse_xs_duration(str(root.get("mediaPresentationDuration"))),
            adaptation_sets=tuple(sets),
        )
    except (TypeError, ValueError) as exc:
        raise ManifestParseError("DASH", f"malformed attribute: {exc}") from exc
