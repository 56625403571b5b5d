"""HLS playlists (RFC 8216), version 7, rendered from the model and parsed back.

Audio-only presentations get one ``EXT-X-STREAM-INF`` per rendition: hls.js
adapts only across variants, not across ``EXT-X-MEDIA`` renditions.  Tags are
written in the order the RFC lists them (playlist tags, then per-segment tags).
Durations are computed from integer ticks and formatted only at the end.
With content steering (``cadenza.manifests.steering``) the multivariant playlist lists
every variant once per pathway, after ``EXT-X-CONTENT-STEERING``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from cadenza.manifests.errors import ManifestParseError
from cadenza.manifests.model import Presentation, Rendition, SegmentLayout
from cadenza.manifests.steering import SteeringConfig

VERSION = 7
LOUDNESS_DATA_IDS = {
    "integrated": "com.cadenza.loudness.integrated-lufs",
    "true_peak": "com.cadenza.loudness.true-peak-dbtp",
    "range": "com.cadenza.loudness.range-lu",
}


def _seconds(ticks: int, timescale: int) -> str:
    """Decimal seconds with 6 places: exact to the microsecond, deterministic."""
    micro = (Fraction(ticks, timescale) * 1_000_000).__round__()
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


def _round_half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


def target_duration_s(rendition: Rendition) -> int:
    """RFC 8216 4.3.3.1: every EXTINF, rounded to the nearest integer, is <= the target."""
    return max(
        _round_half_up(Fraction(s.duration_ticks, rendition.timescale)) for s in rendition.segments
    )


def render_master(p: Presentation, steering: SteeringConfig | None = None) -> str:
    """The multivariant playlist; with ``steering``, the content steering tag and
    every variant once per pathway (absolute URIs, ``PATHWAY-ID``,
    ``STABLE-VARIANT-ID``), pathways in the order the configuration lists them."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if steering is not None:
        lines.append(
            f'#EXT-X-CONTENT-STEERING:SERVER-URI="{steering.server_uri}",'
            f'PATHWAY-ID="{steering.default}"'
        )
    if p.loudness is not None:
        values = {
            "integrated": p.loudness.integrated_lufs,
            "true_peak": p.loudness.true_peak_dbtp,
            "range": p.loudness.loudness_range_lu,
        }
        for key, value in values.items():
            if value is not None:
                lines.append(
                    f'#EXT-X-SESSION-DATA:DATA-ID="{LOUDNESS_DATA_IDS[key]}",VALUE="{value:.1f}"'
                )
    if steering is None:
        for r in p.renditions:
            lines.append(_stream_inf(r))
            lines.append(r.playlist_uri)
        return "\n".join(lines) + "\n"
    for pathway in steering.pathways:
        base = pathway.track_url(p.track_id)
        for r in p.renditions:
            lines.append(f'{_stream_inf(r)},PATHWAY-ID="{pathway.id}",STABLE-VARIANT-ID="{r.id}"')
            lines.append(base + r.playlist_uri)
    return "\n".join(lines) + "\n"


def _stream_inf(r: Rendition) -> str:
    return (
        f"#EXT-X-STREAM-INF:BANDWIDTH={r.peak_bitrate_bps},"
        f'AVERAGE-BANDWIDTH={r.average_bitrate_bps},CODECS="{r.codecs}"'
    )


def render_media_playlist(r: Rendition) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration_s(r)}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if r.layout is SegmentLayout.SINGLE:
        if r.init_range is None:
            raise ValueError(f"{r.id}: single-file layout needs init_range")
        lines.append(
            f'#EXT-X-MAP:URI="{r.init_name}",'
            f'BYTERANGE="{r.init_range.length_bytes}@{r.init_range.offset_bytes}"'
        )
    else:
        lines.append(f'#EXT-X-MAP:URI="{r.init_name}"')
    for s in r.segments:
        lines.append(f"#EXTINF:{_seconds(s.duration_ticks, r.timescale)},")
        if s.byte_range is not None:
            lines.append(
                f"#EXT-X-BYTERANGE:{s.byte_range.length_bytes}@{s.byte_range.offset_bytes}"
            )
        lines.append(r.segment_name(s))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


# -- parsing ---------------------------------------------------------------

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute list (RFC 8216 4.2), quotes removed."""
    return {k: v.strip('"') for k, v in _ATTR.findall(text)}


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth_bps: int
    average_bandwidth_bps: int | None
    codecs: str | None
    pathway_id: str | None = None  # PATHWAY-ID, with content steering


@dataclass(frozen=True, slots=True)
class MediaSegmentEntry:
    uri: str
    duration_s: Fraction
    byte_range: tuple[int, int] | None  # (length, offset)


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    version: int
    target_duration_s: int
    media_sequence: int
    playlist_type: str | None
    map_uri: str
    map_byte_range: tuple[int, int] | None
    segments: tuple[MediaSegmentEntry, ...]
    endlist: bool


def _lines(text: str, kind: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ManifestParseError(kind, "does not start with #EXTM3U")
    return lines


def parse_master(text: str) -> tuple[Variant, ...]:
    lines = _lines(text, "HLS master")
    variants = []
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = parse_attributes(line.split(":", 1)[1])
            if index + 1 >= len(lines) or lines[index + 1].startswith("#"):
                raise ManifestParseError("HLS master", "EXT-X-STREAM-INF without a URI")
            try:
                bandwidth = int(attrs["BANDWIDTH"])
                average = int(attrs["AVERAGE-BANDWIDTH"]) if "AVERAGE-BANDWIDTH" in attrs else None
            except (KeyError, ValueError) as exc:
                raise ManifestParseError("HLS master", f"bad BANDWIDTH: {line}") from exc
            variants.append(
                Variant(
                    lines[index + 1],
                    bandwidth,
                    average,
                    attrs.get("CODECS"),
                    attrs.get("PATHWAY-ID"),
                )
            )
    return tuple(variants)


def _byte_range(value: str) -> tuple[int, int]:
    length, _, offset = value.partition("@")
    return int(length), int(offset or 0)


def parse_media_playlist(text: str) -> MediaPlaylist:
    lines = _lines(text, "HLS media")
    fields: dict[str, str] = {}
    segments: list[MediaSegmentEntry] = []
    duration: Fraction | None = None
    byte_range: tuple[int, int] | None = None
    try:
        for line in lines[1:]:
            if line.startswith("#EXTINF:"):
                duration = Fraction(line[8:].split(",", 1)[0])
            elif line.startswith("#EXT-X-BYTERANGE:"):
                byte_range = _byte_range(line.split(":", 1)[1])
            elif line.startswith("#"):
                name, _, value = line[1:].partition(":")
                fields[name] = value
            else:
                if duration is None:
                    raise ManifestParseError("HLS media", f"segment {line} has no EXTINF")
                segments.append(MediaSegmentEntry(line, duration, byte_range))
                duration, byte_range = None, None
        map_attrs = parse_attributes(fields.get("EXT-X-MAP", ""))
        return MediaPlaylist(
            version=int(fields.get("EXT-X-VERSION", "1")),
            target_duration_s=int(fields["EXT-X-TARGETDURATION"]),
            media_sequence=int(fields.get("EXT-X-MEDIA-SEQUENCE", "0")),
            playlist_type=fields.get("EXT-X-PLAYLIST-TYPE"),
            map_uri=map_attrs.get("URI", ""),
            map_byte_range=_byte_range(map_attrs["BYTERANGE"])
            if "BYTERANGE" in map_attrs
            else None,
            segments=tuple(segments),
            endlist="EXT-X-ENDLIST" in fields,
        )
    except (KeyError, ValueError, ZeroDivisionError) as exc:
        raise ManifestParseError("HLS media", f"malformed tag: {exc}") from exc
