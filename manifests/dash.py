"""DASH MPDs (ISO/IEC 23009-1), rendered from the model (parsed back by
:mod:`cadenza.manifests.dash_parse`).

- Static MPD, one ``AdaptationSet`` per codec family and channel count: players
  cannot switch codecs inside one (5.3.3.1), and a switch between 5.1 and a stereo
  downmix is not seamless.  When a presentation holds more than one channel count,
  each set carries a ``Label`` (5.3.7.2, "Stereo", "5.1") to choose by.
- Segmented layout: live profile, per-Representation ``BaseURL`` and a
  ``SegmentTemplate`` with a run-length ``SegmentTimeline`` (5.3.9.6).
- Single-file layout: on-demand profile, ``SegmentBase`` with ``indexRange``
  pointing at the ``sidx`` (5.3.9.2, 8.3).
- Loudness: ``SupplementalProperty`` with scheme ``urn:cadenza:loudness:2026``
  and value ``I=<LUFS> TP=<dBTP>[ LRA=<LU>]`` on each AdaptationSet (a stereo
  downmix's set carries its own figures); an unmeasured
  programme (too short or silent to gate) has no ``I=`` part.
- Metadata (:mod:`cadenza.manifests.metadata`): an MPD-level ``ProgramInformation``
  (5.7: ``Title`` the track title, ``Source`` its label, ``Copyright``) and, on each
  AdaptationSet, one ``SupplementalProperty`` per key with scheme
  ``urn:cadenza:metadata:2026:<key>`` and the value as ``value``.
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

- Encryption (:mod:`cadenza.manifests.encryption`): a ``cbcs`` AdaptationSet carries
  ``ContentProtection`` with the ``urn:mpeg:dash:mp4protection:2011`` scheme and
  ``cenc:default_KID``, then the ClearKey system, with an absolute licence URL in
  ``dashif:Laurl`` when the caller gives one (on each Representation instead when
  its renditions' keys differ); the ``cenc`` and ``dashif`` namespaces are declared
  only then.
  ``aes-128`` renditions are HLS only and left out.

Element order follows the schema's sequences, and every MPD rendered here
validates against the official XSD (tests/data/schemas).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from lxml import etree

from cadenza.manifests.channels import loudness_of
from cadenza.manifests.encryption import (
    add_content_protection,
    dash_namespaces,
    dash_renditions,
    shared_key_id,
)
from cadenza.manifests.groups import with_session
from cadenza.manifests.metadata import DASH_SCHEME_PREFIX, MetadataKey, clean_text
from cadenza.manifests.model import (
    MEDIA_TEMPLATE,
    BitrateHint,
    Codec,
    Loudness,
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


def qname(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _loudness_value(loudness: Loudness | None) -> str | None:
    """An AdaptationSet's loudness figures (its renditions' own, a stereo downmix's,
    else the track's: :func:`cadenza.manifests.channels.loudness_of`)."""
    if loudness is None:
        return None
    parts = [] if loudness.integrated_lufs is None else [f"I={loudness.integrated_lufs:.1f}"]
    parts.append(f"TP={loudness.true_peak_dbtp:.1f}")
    if loudness.loudness_range_lu is not None:
        parts.append(f"LRA={loudness.loudness_range_lu:.1f}")
    return " ".join(parts)


# ProgramInformation's children (ISO/IEC 23009-1 5.7), in the schema's order.
_PROGRAM_INFORMATION = (
    ("Title", MetadataKey.TITLE),
    ("Source", MetadataKey.LABEL),
    ("Copyright", MetadataKey.COPYRIGHT),
)


def _program_information(mpd: etree._Element, p: Presentation) -> None:
    values = dict(p.metadata)
    if not any(key in values for _, key in _PROGRAM_INFORMATION):
        return
    info = etree.SubElement(mpd, qname("ProgramInformation"))
    for tag, key in _PROGRAM_INFORMATION:
        if key in values:
            etree.SubElement(info, qname(tag)).text = clean_text(values[key])


def _timeline(parent: etree._Element, r: Rendition) -> None:
    add_timeline(parent, [(s.start_ticks, s.duration_ticks) for s in r.segments])


def add_timeline(parent: etree._Element, spans: list[tuple[int, int]]) -> None:
    """A run-length ``SegmentTimeline`` (5.3.9.6) of (start, duration) ticks: ``t``
    only where a segment does not follow the one before, ``r`` for repeats."""
    timeline = etree.SubElement(parent, qname("SegmentTimeline"))
    expected_start: int | None = None
    run: list[int] = []  # [t or -1, d, r]
    for start_ticks, duration_ticks in spans:
        if run and duration_ticks == run[1] and start_ticks == expected_start:
            run[2] += 1
        else:
            if run:
                _s(timeline, run)
            start = start_ticks if start_ticks != expected_start else -1
            run = [start, duration_ticks, 0]
        expected_start = start_ticks + duration_ticks
    if run:
        _s(timeline, run)


def _s(timeline: etree._Element, run: list[int]) -> None:
    element = etree.SubElement(timeline, qname("S"))
    if run[0] >= 0:
        element.set("t", str(run[0]))
    element.set("d", str(run[1]))
    if run[2]:
        element.set("r", str(run[2]))


def _representation_element(
    adaptation: etree._Element,
    rep_id: str,
    bandwidth_bps: int,
    r: Rendition,
    protection: tuple[str, str | None] | None = None,
) -> etree._Element:
    rep = etree.SubElement(adaptation, qname("Representation"))
    rep.set("id", rep_id)
    rep.set("bandwidth", str(bandwidth_bps))
    rep.set("codecs", r.codecs)
    rep.set("audioSamplingRate", str(r.sample_rate_hz))
    channels = etree.SubElement(rep, qname("AudioChannelConfiguration"))
    channels.set("schemeIdUri", CHANNEL_SCHEME)
    channels.set("value", str(r.channels))
    if protection is not None:  # (key id, licence URL) of this Representation's own
        add_content_protection(rep, NS, *protection)
    return rep


def _template(parent: etree._Element, r: Rendition, initialization: str, media: str) -> None:
    template = etree.SubElement(parent, qname("SegmentTemplate"))
    template.set("timescale", str(r.timescale))
    template.set("initialization", initialization)
    template.set("media", media)
    template.set("startNumber", str(r.segments[0].number))
    _timeline(template, r)


def _representation(
    adaptation: etree._Element, r: Rendition, protection: tuple[str, str | None] | None = None
) -> None:
    rep = _representation_element(adaptation, r.id, r.peak_bitrate_bps, r, protection)
    if r.layout is SegmentLayout.SINGLE:
        if r.init_range is None or r.index_range is None:
            raise ValueError(f"{r.id}: single-file layout needs init_range and index_range")
        etree.SubElement(rep, qname("BaseURL")).text = f"{r.id}/{r.init_name}"
        base = etree.SubElement(rep, qname("SegmentBase"))
        base.set("timescale", str(r.timescale))
        base.set("indexRange", f"{r.index_range.offset_bytes}-{r.index_range.last_byte}")
        base.set("indexRangeExact", "true")
        init = etree.SubElement(base, qname("Initialization"))
        init.set("range", f"{r.init_range.offset_bytes}-{r.init_range.last_byte}")
    else:
        etree.SubElement(rep, qname("BaseURL")).text = f"{r.id}/"
        _template(rep, r, r.init_name, r.media_template)


def add_pathway_base_urls(mpd: etree._Element, steering: SteeringConfig, track_id: str) -> None:
    """One MPD-level ``BaseURL`` per pathway, its ``serviceLocation`` the pathway id
    (ISO/IEC 23009-1 5.6.2): the track folder on that pathway."""
    for pathway in steering.pathways:
        base = etree.SubElement(mpd, qname("BaseURL"))
        base.set("serviceLocation", pathway.id)
        base.text = pathway.track_url(track_id)


def add_content_steering(mpd: etree._Element, steering: SteeringConfig) -> None:
    """The ``ContentSteering`` element (DASH-IF content steering): the steering
    server's URI and the pathway to start on.  Its place in the MPD's sequence is
    after ``ServiceDescription``, before the first ``Period``."""
    element = etree.SubElement(mpd, qname("ContentSteering"))
    element.set("defaultServiceLocation", steering.default)
    element.set("queryBeforeStart", "true" if steering.query_before_start else "false")
    element.text = steering.server_uri


def _mpd_head(
    p: Presentation, single: bool, steering: SteeringConfig | None, hint: BitrateHint | None
) -> tuple[etree._Element, etree._Element]:
    """The MPD and its Period.  Before the Period, in the order of the MPD's sequence
    (ProgramInformation, BaseURL, Location, PatchLocation, ServiceDescription, ...,
    ContentSteering, Period; see tests/data/schemas): one ``BaseURL`` per pathway,
    the ``ServiceDescription``, then ``ContentSteering``."""
    duration = xs_duration(p.duration_ticks, p.timescale)
    # The default namespace's prefix is None, which lxml's stubs do not allow for.
    nsmap: dict[Any, str] = {None: NS, **dash_namespaces(p.renditions)}
    mpd = etree.Element(qname("MPD"), nsmap=nsmap)
    mpd.set("profiles", PROFILE_ON_DEMAND if single else PROFILE_LIVE)
    mpd.set("type", "static")
    mpd.set("mediaPresentationDuration", duration)
    mpd.set("minBufferTime", MIN_BUFFER_TIME)
    _program_information(mpd, p)
    if steering is not None:
        add_pathway_base_urls(mpd, steering, p.track_id)
    if hint is not None:
        service = etree.SubElement(mpd, qname("ServiceDescription"))
        service.set("id", "0")
        bandwidth = etree.SubElement(service, qname("OperatingBandwidth"))
        bandwidth.set("mediaType", "audio")
        if hint.min_bitrate_bps is not None:
            bandwidth.set("min", str(hint.min_bitrate_bps))
        bandwidth.set("max", str(hint.max_bitrate_bps))
        bandwidth.set("target", str(hint.start_bitrate_bps))
    if steering is not None:
        add_content_steering(mpd, steering)
    period = etree.SubElement(mpd, qname("Period"))
    period.set("id", "0")
    period.set("start", "PT0S")
    period.set("duration", duration)
    return mpd, period


def _adaptation_set(
    period: etree._Element,
    index: int,
    p: Presentation,
    loudness: str | None,
    label: str | None = None,
    protection: tuple[str, str | None] | None = None,
) -> etree._Element:
    """An AdaptationSet and the descriptors every set carries (loudness, metadata),
    then its ``Label``, in the order of RepresentationBaseType's sequence."""
    adaptation = etree.SubElement(period, qname("AdaptationSet"))
    adaptation.set("id", str(index))
    adaptation.set("contentType", "audio")
    adaptation.set("mimeType", "audio/mp4")
    adaptation.set("segmentAlignment", "true")
    adaptation.set("startWithSAP", "1")
    if protection is not None:  # (key id, licence URL)
        add_content_protection(adaptation, NS, *protection)
    if loudness is not None:
        prop = etree.SubElement(adaptation, qname("SupplementalProperty"))
        prop.set("schemeIdUri", LOUDNESS_SCHEME)
        prop.set("value", loudness)
    for key, text in p.metadata:
        prop = etree.SubElement(adaptation, qname("SupplementalProperty"))
        prop.set("schemeIdUri", DASH_SCHEME_PREFIX + key)
        prop.set("value", clean_text(text))
    if label is not None:
        etree.SubElement(adaptation, qname("Label")).text = label
    return adaptation


def adaptation_set_keys(kinds: Iterable[tuple[Codec, int]]) -> list[tuple[Codec, int]]:
    """The AdaptationSets of renditions of these (codec, channels): one per pair, in
    codec order, then the most channels first (5.1 before its stereo downmix)."""
    present = set(kinds)
    counts = sorted({channels for _, channels in present}, reverse=True)
    return [
        (codec, channels) for codec in Codec for channels in counts if (codec, channels) in present
    ]


def channels_label(channels: int) -> str:
    """How a set of ``channels``-channel renditions is labelled for a listener."""
    return {1: "Mono", 2: "Stereo", 6: "5.1", 8: "7.1"}.get(channels, f"{channels} channels")


def mpd_text(mpd: etree._Element) -> str:
    body: bytes = etree.tostring(mpd, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body.decode("utf-8")


def render_mpd(
    p: Presentation,
    steering: SteeringConfig | None = None,
    *,
    hint: BitrateHint | None = None,
    licence_url: str | None = None,
) -> str:
    """The MPD; with ``steering``, one MPD-level ``BaseURL`` per pathway (its
    ``serviceLocation`` the pathway id) and a ``ContentSteering`` element, so
    every Representation's relative ``BaseURL`` resolves on the chosen pathway;
    with ``hint``, a ``ServiceDescription`` carrying the session's guidance;
    ``licence_url``: the absolute ClearKey licence URL of ``cbcs`` renditions, written
    as ``dashif:Laurl`` (None: none written; the page configures its player's)."""
    listed = dash_renditions(p.renditions)
    if len(listed) != len(p.renditions):
        p = replace(p, renditions=listed)
    single = {r.layout for r in p.renditions} == {SegmentLayout.SINGLE}
    mpd, period = _mpd_head(p, single, steering, hint)
    counts = {r.channels for r in p.renditions}
    sets = adaptation_set_keys((r.codec, r.channels) for r in p.renditions)
    for index, (codec, channels) in enumerate(sets):
        label = channels_label(channels) if len(counts) > 1 else None
        members = [r for r in p.renditions if r.codec is codec and r.channels == channels]
        key_id = shared_key_id(members)
        protection = None if key_id is None else (key_id, licence_url)
        loudness = _loudness_value(loudness_of(p, members))
        adaptation = _adaptation_set(period, index, p, loudness, label, protection)
        for rendition in members:
            own = rendition.encryption if key_id is None else None
            _representation(
                adaptation, rendition, None if own is None else (own.key_id, licence_url)
            )
    return mpd_text(mpd)


def group_media_template(
    group: SwitchGroup, session_id: str | None = None, media_template: str = MEDIA_TEMPLATE
) -> str:
    """``group-aac/seg-$Number%05d$.m4s`` (the top rung's segment names, version tag
    and all), with ``?sid=<id>`` for a session."""
    return with_session(f"{group.folder}/{media_template}", session_id)


def render_group_mpd(
    p: Presentation, *, session_id: str | None = None, hint: BitrateHint | None = None
) -> str:
    """The MPD of origin-decided playback: one AdaptationSet per switching group of
    two rungs or more, each with one Representation (see the module docstring).

    Raises :class:`~cadenza.manifests.errors.NotSwitchableError` when there is none.
    """
    groups = p.switchable_groups()
    mpd, period = _mpd_head(p, False, None, hint)
    for index, group in enumerate(groups):
        members = [p.rendition(i) for i in group.rendition_ids]
        loudness = _loudness_value(loudness_of(p, members))
        # Every rung of a group has the same timeline: the top one describes the group's.
        top = members[-1]
        key_id = shared_key_id(members)
        protection = None if key_id is None else (key_id, None)
        adaptation = _adaptation_set(period, index, p, loudness, protection=protection)
        rep = _representation_element(
            adaptation, group.id, max(r.peak_bitrate_bps for r in members), top
        )
        media = group_media_template(group, session_id, top.media_template)
        _template(rep, top, group.init_uri, media)
    return mpd_text(mpd)
