"""HLS playlists (RFC 8216), version 7, rendered from the model and parsed back.

Audio-only presentations get one ``EXT-X-STREAM-INF`` per rendition: hls.js
adapts only across variants, not across ``EXT-X-MEDIA`` renditions.  Variants carry no
channel count (RFC 8216 4.3.4.2), so a player could switch between a 5.1 rendition and
its stereo downmix: a multivariant playlist lists the renditions of one channel count
only, stereo when there is one (:mod:`cadenza.manifests.channels`; ``?channels=6`` at the
origin selects the others).  Tags are
written in the order the RFC lists them (playlist tags, then per-segment tags).
Durations are computed from integer ticks and formatted only at the end.
With content steering (``cadenza.manifests.steering``) the multivariant playlist lists
every variant once per pathway, after ``EXT-X-CONTENT-STEERING``.

Per-session guidance (a :class:`~cadenza.manifests.model.BitrateHint`) travels as
``EXT-X-SESSION-DATA`` (RFC 8216 4.3.4.4): ``com.cadenza.start-bitrate`` and
``com.cadenza.max-bitrate``, VALUE in bit/s; hls.js hands them to the page in
``MANIFEST_PARSED``'s ``sessionData``.

Track metadata (:mod:`cadenza.manifests.metadata`) travels the same way, one
``EXT-X-SESSION-DATA`` per key (``com.cadenza.title``, ``com.cadenza.isrc``,
``com.cadenza.replaygain-track-gain-db``...), after the loudness figures; values are
quoted-strings (4.2), so they hold no double quote, CR or LF.  An unmeasured
loudness (too short or silent to gate) writes no integrated figure.  The loudness is
that of the variants listed: a stereo downmix's own figures when the stereo set of a
multichannel source is listed (:func:`cadenza.manifests.channels.loudness_of`).

Origin-decided playback (``?abr=origin``): :func:`render_group_master` lists one
variant per switching group (``cadenza.manifests.groups``) of two rungs or more,
whose media playlist is ``group-<id>/playlist.m3u8``; :func:`render_group_playlist`
lists that group's segments as ``group-<id>/seg-00001.m4s``... and maps the group's
shared init segment at its own, immutable URI (``../aac-320k/init.mp4``).  The
origin answers each group segment with the rung it picks.  With a session id,
every URI the origin decides or renders for the session (the group playlist and
its segments) carries it as ``?sid=<id>``; the init segment does not, so caches
share it.  A variant's ``BANDWIDTH`` and ``AVERAGE-BANDWIDTH`` are the group's
highest (its top rung's), which no choice of the origin exceeds (4.3.4.2).

An encrypted rendition's media playlist carries an ``EXT-X-KEY``
(:func:`cadenza.manifests.encryption.hls_key_tag`): ``SAMPLE-AES`` with the W3C ClearKey
``KEYFORMAT`` for ``cbcs``, before the ``EXT-X-MAP``; ``AES-128`` with the key's URL for
``aes-128``, after the ``EXT-X-MAP``, whose init segment stays in the clear.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from cadenza.manifests.channels import hls_channel_count, hls_renditions, loudness_of
from cadenza.manifests.encryption import hls_key_tag
from cadenza.manifests.errors import ManifestParseError, NotSwitchableError
from cadenza.manifests.groups import with_session
from cadenza.manifests.metadata import quoted_string_value, session_data_id
from cadenza.manifests.model import (
    PLAYLIST_NAME,
    BitrateHint,
    EncryptionScheme,
    Loudness,
    Presentation,
    Rendition,
    Segment,
    SegmentLayout,
)
from cadenza.manifests.steering import SteeringConfig

VERSION = 7
LOUDNESS_DATA_IDS = {
    "integrated": "com.cadenza.loudness.integrated-lufs",
    "true_peak": "com.cadenza.loudness.true-peak-dbtp",
    "range": "com.cadenza.loudness.range-lu",
}
START_BITRATE_DATA_ID = "com.cadenza.start-bitrate"
MAX_BITRATE_DATA_ID = "com.cadenza.max-bitrate"


def decimal_seconds(ticks: int, timescale: int) -> str:
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


def _head(
    p: Presentation,
    hint: BitrateHint | None,
    steering: SteeringConfig | None = None,
    loudness: Loudness | None = None,
) -> list[str]:
    """The playlist tags (content steering among them) and the session data every
    multivariant playlist starts with; ``loudness``: the listed renditions' figures
    (:func:`cadenza.manifests.channels.loudness_of`)."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if steering is not None:
        lines.append(content_steering_tag(steering))
    if loudness is not None:
        values = {
            "integrated": loudness.integrated_lufs,
            "true_peak": loudness.true_peak_dbtp,
            "range": loudness.loudness_range_lu,
        }
        for key, value in values.items():
            if value is not None:
                lines.append(
                    f'#EXT-X-SESSION-DATA:DATA-ID="{LOUDNESS_DATA_IDS[key]}",VALUE="{value:.1f}"'
                )
    for key, text in p.metadata:
        lines.append(
            f'#EXT-X-SESSION-DATA:DATA-ID="{session_data_id(key)}",'
            f'VALUE="{quoted_string_value(text)}"'
        )
    if hint is not None:
        for data_id, bps in (
            (START_BITRATE_DATA_ID, hint.start_bitrate_bps),
            (MAX_BITRATE_DATA_ID, hint.max_bitrate_bps),
        ):
            lines.append(f'#EXT-X-SESSION-DATA:DATA-ID="{data_id}",VALUE="{bps}"')
    return lines


def render_master(
    p: Presentation, steering: SteeringConfig | None = None, *, hint: BitrateHint | None = None
) -> str:
    """The multivariant playlist; with ``steering``, the content steering tag and
    every variant once per pathway (absolute URIs, ``PATHWAY-ID``,
    ``STABLE-VARIANT-ID``), pathways in the order the configuration lists them;
    with ``hint``, the session's start and max bitrate as session data."""
    listed = hls_renditions(p.renditions)
    lines = _head(p, hint, steering, loudness_of(p, listed))
    if steering is None:
        for r in listed:
            lines.append(_stream_inf(r))
            lines.append(r.playlist_uri)
        return "\n".join(lines) + "\n"
    variants = [(r.id, _stream_inf(r), r.playlist_uri) for r in listed]
    lines += steered_variants(steering, p.track_id, variants)
    return "\n".join(lines) + "\n"


def content_steering_tag(steering: SteeringConfig) -> str:
    """``EXT-X-CONTENT-STEERING`` (RFC 8216bis 4.4.6.6): the steering server and the
    pathway to start on."""
    return (
        f'#EXT-X-CONTENT-STEERING:SERVER-URI="{steering.server_uri}",'
        f'PATHWAY-ID="{steering.default}"'
    )


def steered_variants(
    steering: SteeringConfig, track_id: str, variants: list[tuple[str, str, str]]
) -> list[str]:
    """Every variant once per pathway, in the configuration's order: its
    ``EXT-X-STREAM-INF`` with ``PATHWAY-ID`` and ``STABLE-VARIANT-ID`` (the rendition
    id, the same on every pathway), then its absolute URI on that pathway.
    ``variants``: (rendition id, stream-inf tag, playlist URI relative to the track)."""
    lines = []
    for pathway in steering.pathways:
        base = pathway.track_url(track_id)
        for rendition_id, stream_inf, uri in variants:
            lines.append(
                f'{stream_inf},PATHWAY-ID="{pathway.id}",STABLE-VARIANT-ID="{rendition_id}"'
            )
            lines.append(base + uri)
    return lines


def render_group_master(
    p: Presentation, *, session_id: str | None = None, hint: BitrateHint | None = None
) -> str:
    """The multivariant playlist of origin-decided playback: one variant per
    switching group of two rungs or more (see the module docstring), of one channel
    count (:func:`cadenza.manifests.channels.hls_channel_count`).

    Raises :class:`~cadenza.manifests.errors.NotSwitchableError` when there is none.
    """
    groups = p.switchable_groups()
    channels = hls_channel_count(g.channels for g in groups)
    listed = [g for g in groups if g.channels == channels]
    members_of = [[p.rendition(i) for i in g.rendition_ids] for g in listed]
    lines = _head(p, hint, loudness=loudness_of(p, [r for m in members_of for r in m]))
    for group, members in zip(listed, members_of, strict=True):
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={max(r.peak_bitrate_bps for r in members)},"
            f"AVERAGE-BANDWIDTH={max(r.average_bitrate_bps for r in members)},"
            f'CODECS="{group.codecs}"'
        )
        lines.append(with_session(f"{group.folder}/{PLAYLIST_NAME}", session_id))
    return "\n".join(lines) + "\n"


def render_group_playlist(p: Presentation, group_id: str, *, session_id: str | None = None) -> str:
    """The media playlist of one switching group, served at ``group-<id>/playlist.m3u8``.

    Raises ``KeyError`` for an unknown group and
    :class:`~cadenza.manifests.errors.NotSwitchableError` for one the origin cannot
    decide for (a single rung, or the single-file layout).
    """
    group = p.group(group_id)
    if group not in p.switchable_groups():
        raise NotSwitchableError(
            p.track_id, f"group {group_id} has one rendition", tuple(g.id for g in p.groups)
        )
    # Every rung of a group has the same timeline: any one describes the group's.
    rendition = p.rendition(group.rendition_ids[-1])
    return _media_playlist(
        rendition,
        f'#EXT-X-MAP:URI="../{group.init_uri}"',
        lambda segment: with_session(rendition.segment_name(segment), session_id),
    )


def stream_inf_tag(peak_bps: int, average_bps: int, codecs: str) -> str:
    """A variant's ``EXT-X-STREAM-INF`` (RFC 8216 4.3.4.2), without its URI line."""
    return (
        f'#EXT-X-STREAM-INF:BANDWIDTH={peak_bps},AVERAGE-BANDWIDTH={average_bps},CODECS="{codecs}"'
    )


def _stream_inf(r: Rendition) -> str:
    return stream_inf_tag(r.peak_bitrate_bps, r.average_bitrate_bps, r.codecs)


def render_media_playlist(r: Rendition) -> str:
    if r.layout is SegmentLayout.SINGLE:
        if r.init_range is None:
            raise ValueError(f"{r.id}: single-file layout needs init_range")
        map_tag = (
            f'#EXT-X-MAP:URI="{r.init_name}",'
            f'BYTERANGE="{r.init_range.length_bytes}@{r.init_range.offset_bytes}"'
        )
    else:
        map_tag = f'#EXT-X-MAP:URI="{r.init_name}"'
    return _media_playlist(r, map_tag, r.segment_name)


def _key_and_map(r: Rendition, map_tag: str) -> list[str]:
    """The ``EXT-X-KEY`` and ``EXT-X-MAP`` lines in the order that says what is encrypted.

    ``SAMPLE-AES`` (cbcs) encrypts samples, never the init segment's boxes: the key comes
    first. ``AES-128`` encrypts whole files: the map comes first, so the init segment is
    in the clear and needs no ``IV`` (RFC 8216 4.3.2.5 requires one for an init segment
    encrypted under AES-128)."""
    if r.encryption is None:
        return [map_tag]
    key = hls_key_tag(r.encryption)
    if r.encryption.scheme is EncryptionScheme.AES_128:
        return [map_tag, key]
    return [key, map_tag]


def _media_playlist(r: Rendition, map_tag: str, segment_uri: Callable[[Segment], str]) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration_s(r)}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        *_key_and_map(r, map_tag),
    ]
    for s in r.segments:
        lines.append(f"#EXTINF:{decimal_seconds(s.duration_ticks, r.timescale)},")
        if s.byte_range is not None:
            lines.append(
                f"#EXT-X-BYTERANGE:{s.byte_range.length_bytes}@{s.byte_range.offset_bytes}"
            )
        lines.append(segment_uri(s))
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
