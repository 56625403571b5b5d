"""The pure presentation model shared by the packager and the origin.

Every time is an integer count of ticks in a stated timescale; only the
renderers turn ticks into seconds.  Every model is a frozen dataclass, so a
presentation can be shared between threads, cached and compared freely.

File layout of one packaged track (``<track_id>/``)::

    master.m3u8            HLS multivariant playlist
    manifest.mpd           DASH MPD
    presentation.json      this model, serialised by ``cadenza.manifests.jsonio``
    <rendition.id>/init.mp4, seg-00001.m4s, ...   (segmented mode)
    <rendition.id>/media.mp4                      (single-file mode)
    <rendition.id>/playlist.m3u8                  HLS media playlist

A republished track's rendition files carry the packaging's version tag
(``init-<tag>.mp4``, ``seg-00001-<tag>.m4s``, ``playlist-<tag>.m3u8``; see
``Rendition.name_tag``), and the files of earlier packagings stay beside them until
``cadenza gc`` removes them after a grace period.

Switching groups (``cadenza.manifests.groups``) are recorded in presentation.json;
the origin serves a group under ``group-<group.id>/`` (no such folder is written).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Final

from cadenza.manifests.errors import (
    InvalidBitrateHintError,
    InvalidEncryptionError,
    NotSwitchableError,
)
from cadenza.manifests.fingerprint import Fingerprint
from cadenza.manifests.groups import SwitchGroup, settle_groups

__all__ = [
    "INIT_NAME",
    "MASTER_NAME",
    "MEDIA_TEMPLATE",
    "MPD_NAME",
    "PLAYLIST_NAME",
    "PRESENTATION_NAME",
    "SINGLE_FILE_NAME",
    "BitrateHint",
    "ByteRange",
    "Codec",
    "Encryption",
    "EncryptionScheme",
    "Loudness",
    "Presentation",
    "Rendition",
    "Segment",
    "SegmentLayout",
    "SourceInfo",
    "SwitchGroup",
    "expand_template",
    "tagged_name",
]

INIT_NAME = "init.mp4"
MEDIA_TEMPLATE = "seg-$Number%05d$.m4s"
SINGLE_FILE_NAME = "media.mp4"
PLAYLIST_NAME = "playlist.m3u8"
MASTER_NAME = "master.m3u8"
MPD_NAME = "manifest.mpd"
PRESENTATION_NAME = "presentation.json"


class Codec(enum.StrEnum):
    """Audio codecs cadenza packages.  Values are the names used on the CLI,
    in ladder files, in ``?codec=`` filters and in ``presentation.json``."""

    AAC = "aac"
    OPUS = "opus"
    FLAC = "flac"

    @property
    def lossless(self) -> bool:
        return self is Codec.FLAC


class SegmentLayout(enum.StrEnum):
    """``separate``: one init file plus one file per segment.
    ``single``: init, ``sidx`` and all fragments in one file, addressed by byte ranges."""

    SEPARATE = "separate"
    SINGLE = "single"


class EncryptionScheme(enum.StrEnum):
    """How a rendition's media is encrypted.

    ``cbcs``: CENC pattern encryption of the samples (ISO/IEC 23001-7 10.4), shared by
    HLS ``METHOD=SAMPLE-AES`` and DASH ``ContentProtection``.  ``aes-128``: whole-segment
    AES-128-CBC (RFC 8216 4.4.4.4 ``METHOD=AES-128``), HLS only."""

    CBCS = "cbcs"
    AES_128 = "aes-128"


_HEX32: Final = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Encryption:
    """A rendition's encryption: its scheme and the id of its content key.

    ``key_id`` is 32 lower-case hex digits (the 16-byte KID of ``tenc``).  ``iv`` is an
    explicit 16-byte IV as 32 hex digits, for ``aes-128`` only; None means the IV is the
    segment's media sequence number (RFC 8216 5.2).  The key itself is never in the
    model: the origin fetches it from the key store by ``key_id``.
    """

    scheme: EncryptionScheme
    key_id: str
    iv: str | None = None

    def __post_init__(self) -> None:
        if not _HEX32.fullmatch(self.key_id):
            raise InvalidEncryptionError("key_id", "expected 32 lower-case hex digits")
        if self.iv is not None:
            if self.scheme is not EncryptionScheme.AES_128:
                raise InvalidEncryptionError("iv", "an explicit IV is for aes-128 only")
            if not _HEX32.fullmatch(self.iv):
                raise InvalidEncryptionError("iv", "expected 32 lower-case hex digits")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A byte range inside one file: ``length_bytes`` bytes from ``offset_bytes``."""

    offset_bytes: int
    length_bytes: int

    @property
    def last_byte(self) -> int:
        """The inclusive end offset, as HTTP ``Range`` and DASH ``indexRange`` write it."""
        return self.offset_bytes + self.length_bytes - 1


@dataclass(frozen=True, slots=True)
class Segment:
    """One CMAF media segment (one ``moof`` + ``mdat``).

    ``start_ticks`` is the segment's decode time (its ``tfdt``) and
    ``duration_ticks`` the sum of its sample durations, both in the
    rendition's timescale.  The first segment starts at 0 and includes the
    encoder's priming samples; the edit list removes them on playback.
    """

    number: int
    start_ticks: int
    duration_ticks: int
    size_bytes: int
    byte_range: ByteRange | None = None  # set in single-file layout only


@dataclass(frozen=True, slots=True)
class Loudness:
    """EBU R128 / ITU-R BS.1770-4 measurements of the source.

    ``integrated_lufs`` is None when the programme could not be gated (shorter than
    one 400 ms block, or no block above the -70 LUFS absolute gate, BS.1770-4 2.8);
    ``unmeasured_reason`` then says why, so a player never normalises to a floor
    that was not measured.
    """

    integrated_lufs: float | None
    true_peak_dbtp: float
    loudness_range_lu: float | None = None
    unmeasured_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Rendition:
    """One encoded rung of the ladder.

    ``id`` is also the rendition's folder name (``aac-128k``, ``flac``).
    ``timescale`` is the rendition's sample rate for audio, so one tick is
    one sample.  ``encoder_delay_ticks`` are the priming samples at the start
    of the first segment; ``duration_ticks`` is the presentation duration
    after the edit list removes priming and padding, equal to the source's.
    ``decoder_config`` is the codec configuration the init segment carries,
    bitrates aside (AAC: the AudioSpecificConfig; Opus: the ``dOps`` payload;
    FLAC: STREAMINFO); None when the packager did not record it.
    """

    id: str
    codec: Codec
    codecs: str  # RFC 6381, e.g. "mp4a.40.2", "opus", "fLaC"
    sample_rate_hz: int
    channels: int
    timescale: int
    average_bitrate_bps: int
    peak_bitrate_bps: int
    encoder_delay_ticks: int
    duration_ticks: int
    init_size_bytes: int
    segments: tuple[Segment, ...]
    target_bitrate_bps: int | None = None  # None for lossless
    bits_per_sample: int | None = None  # FLAC only
    layout: SegmentLayout = SegmentLayout.SEPARATE
    init_range: ByteRange | None = None  # single-file: ftyp + moov
    index_range: ByteRange | None = None  # single-file: sidx
    decoder_config: bytes | None = None
    # The packaging's version tag, in every file name of the rendition (tagged_name):
    # a republished track gets new URLs, so immutable caches never mix two packagings.
    # Empty: the names of a track's first packaging, ``init.mp4``, ``seg-00001.m4s``.
    name_tag: str = ""
    encryption: Encryption | None = None  # None: clear media
    # The rendition's own loudness where it differs from the track's (a stereo downmix
    # of a multichannel source, cadenza.packager.downmix); None: the presentation's.
    loudness: Loudness | None = None

    @property
    def total_bytes(self) -> int:
        return self.init_size_bytes + sum(s.size_bytes for s in self.segments)

    @property
    def media_duration_ticks(self) -> int:
        """Sum of segment durations, priming and padding included."""
        return sum(s.duration_ticks for s in self.segments)

    @property
    def playlist_uri(self) -> str:
        """The HLS media playlist, relative to the track folder."""
        return f"{self.id}/{self.playlist_name}"

    @property
    def playlist_name(self) -> str:
        """The HLS media playlist's file name in the rendition folder."""
        return tagged_name(PLAYLIST_NAME, self.name_tag)

    @property
    def media_template(self) -> str:
        """The segments' names as a DASH ``SegmentTemplate@media``."""
        return tagged_name(MEDIA_TEMPLATE, self.name_tag)

    def segment_name(self, segment: Segment) -> str:
        """File name of a segment, relative to the rendition folder."""
        if self.layout is SegmentLayout.SINGLE:
            return tagged_name(SINGLE_FILE_NAME, self.name_tag)
        return expand_template(self.media_template, segment.number)

    @property
    def init_name(self) -> str:
        name = SINGLE_FILE_NAME if self.layout is SegmentLayout.SINGLE else INIT_NAME
        return tagged_name(name, self.name_tag)


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the packager read, kept for operators in ``presentation.json``."""

    file_name: str
    codec_name: str
    sample_rate_hz: int
    channels: int
    bits_per_sample: int | None = None


@dataclass(frozen=True, slots=True)
class Presentation:
    """One packaged track: its renditions in ladder order.

    ``duration_ticks`` in ``timescale`` (the source sample rate) is the exact
    source duration, which every rendition reproduces after trimming.

    ``groups`` are the switching groups (:mod:`cadenza.manifests.groups`); left
    empty they are derived from the renditions, and given, they are kept to the
    renditions present, so a filtered or capped copy (``dataclasses.replace``)
    never names a rendition it does not hold.
    """

    track_id: str
    timescale: int
    duration_ticks: int
    renditions: tuple[Rendition, ...]
    loudness: Loudness | None = None
    source: SourceInfo | None = None
    target_segment_duration_ticks: int | None = None  # in ``timescale``
    metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    groups: tuple[SwitchGroup, ...] = ()
    fingerprint: Fingerprint | None = None  # what the output was made from

    def __post_init__(self) -> None:
        groups = settle_groups(self.renditions, self.groups)
        if groups != self.groups:
            object.__setattr__(self, "groups", groups)

    def rendition(self, rendition_id: str) -> Rendition:
        for rendition in self.renditions:
            if rendition.id == rendition_id:
                return rendition
        raise KeyError(rendition_id)

    def group(self, group_id: str) -> SwitchGroup:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise KeyError(group_id)

    def switchable_groups(self) -> tuple[SwitchGroup, ...]:
        """The groups origin-decided playback lists: those of two renditions or more.

        Raises :class:`NotSwitchableError` when there is none, or when the layout is
        single-file (a segment is a byte range there, not a file to answer with).
        """
        group_ids = tuple(g.id for g in self.groups)
        if any(r.layout is SegmentLayout.SINGLE for r in self.renditions):
            raise NotSwitchableError(self.track_id, "single-file layout", group_ids)
        groups = tuple(g for g in self.groups if g.switchable)
        if not groups:
            raise NotSwitchableError(
                self.track_id, "no switching group holds two renditions or more", group_ids
            )
        return groups

    def group_of(self, rendition_id: str) -> SwitchGroup | None:
        """The group a rendition belongs to (None when it is in none)."""
        for group in self.groups:
            if rendition_id in group.rendition_ids:
                return group
        return None


@dataclass(frozen=True, slots=True)
class BitrateHint:
    """Guidance for one session, as the manifests carry it to the player: the
    bitrate to start at and the bounds to adapt within, in bit/s.

    The origin fills it from its ABR guidance; the renderers write it as DASH
    ``ServiceDescription``/``OperatingBandwidth`` and HLS ``EXT-X-SESSION-DATA``.
    """

    start_bitrate_bps: int
    max_bitrate_bps: int
    min_bitrate_bps: int | None = None

    def __post_init__(self) -> None:
        low = self.min_bitrate_bps if self.min_bitrate_bps is not None else 0
        if not 0 <= low <= self.start_bitrate_bps <= self.max_bitrate_bps:
            raise InvalidBitrateHintError(self.start_bitrate_bps, self.max_bitrate_bps, low)


def tagged_name(name: str, tag: str) -> str:
    """``name`` with the version ``tag`` before its suffix (``init.mp4``, ``3f9a0c1d``:
    ``init-3f9a0c1d.mp4``; ``seg-$Number%05d$.m4s``: ``seg-$Number%05d$-3f9a0c1d.m4s``);
    ``name`` itself for the empty tag."""
    if not tag:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-{tag}{dot}{suffix}"


def expand_template(template: str, number: int) -> str:
    """Expand the ``$Number%05d$`` identifier of a DASH SegmentTemplate
    (ISO/IEC 23009-1 5.3.9.4.4), the only identifier cadenza writes."""
    head, sep, rest = template.partition("$Number")
    if not sep:
        return template
    fmt, _, tail = rest.partition("$")
    width = int(fmt[2:-1]) if fmt.startswith("%0") and fmt.endswith("d") else 0
    return f"{head}{number:0{width}d}{tail}"
