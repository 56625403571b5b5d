"""DASH MPDs parsed back (ISO/IEC 23009-1): the subset :mod:`cadenza.manifests.dash`
writes and common packagers write, for the tests and the tools that read an MPD."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from lxml import etree

from cadenza.manifests.dash import LOUDNESS_SCHEME, NS
from cadenza.manifests.errors import ManifestParseError


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


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
            prop = next(
                (
                    e
                    for e in adaptation.iterfind(_q("SupplementalProperty"))
                    if e.get("schemeIdUri") == LOUDNESS_SCHEME
                ),
                None,
            )
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
