"""Track metadata: the closed set of keys cadenza records, and how raw tags are cleaned.

Containers spell the same tag many ways (Vorbis comments ``TRACKNUMBER``, MP4
``trkn`` read by FFmpeg as ``track``, ID3 ``TSRC`` or a ``TXXX`` named
``MusicBrainz Album Id``).  :func:`clean_metadata` maps every known spelling to
one :class:`MetadataKey`, drops the tags it does not know (encoder names,
technical tags, anything free-form), and cleans each value:

- control characters (Unicode category ``Cc``), line and paragraph separators and
  format characters are removed, runs of whitespace become one space;
- values are cut to :data:`MAX_VALUE_CHARS` characters;
- structured values are checked and normalised: ISRC (ISO 3901, 12 characters,
  hyphens removed), track and disc numbers (``3`` or ``3/12``), ReplayGain gains in
  dB and peaks as linear amplitudes (numbers only), MusicBrainz ids (UUIDs); a
  value that does not fit is dropped, not guessed at;
- the first value found for a key wins (the caller passes container tags before
  stream tags), and the result is in :class:`MetadataKey` order.

The result is the ``metadata`` of :class:`~cadenza.manifests.model.Presentation`:
``presentation.json`` records it, the HLS multivariant playlist carries each pair as
``EXT-X-SESSION-DATA`` (:func:`session_data_id`) and the MPD as
``ProgramInformation`` and ``SupplementalProperty`` descriptors.
"""

from __future__ import annotations

import enum
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from typing import Final

MAX_VALUE_CHARS: Final = 256
# Raw tags looked at per input: a file with thousands of tags costs no more.
MAX_RAW_TAGS: Final = 512
SESSION_DATA_PREFIX: Final = "com.cadenza."
DASH_SCHEME_PREFIX: Final = "urn:cadenza:metadata:2026:"


class MetadataKey(enum.StrEnum):
    """Every metadata key cadenza records, in the order it records them."""

    TITLE = "title"
    ARTIST = "artist"
    ALBUM = "album"
    ALBUM_ARTIST = "album_artist"
    COMPOSER = "composer"
    DATE = "date"
    GENRE = "genre"
    TRACK_NUMBER = "track_number"
    DISC_NUMBER = "disc_number"
    ISRC = "isrc"
    LABEL = "label"
    COPYRIGHT = "copyright"
    LANGUAGE = "language"
    REPLAYGAIN_TRACK_GAIN_DB = "replaygain_track_gain_db"
    REPLAYGAIN_TRACK_PEAK = "replaygain_track_peak"
    REPLAYGAIN_ALBUM_GAIN_DB = "replaygain_album_gain_db"
    REPLAYGAIN_ALBUM_PEAK = "replaygain_album_peak"
    MUSICBRAINZ_RECORDING_ID = "musicbrainz_recording_id"
    MUSICBRAINZ_TRACK_ID = "musicbrainz_track_id"
    MUSICBRAINZ_RELEASE_ID = "musicbrainz_release_id"
    MUSICBRAINZ_RELEASE_GROUP_ID = "musicbrainz_release_group_id"
    MUSICBRAINZ_ARTIST_ID = "musicbrainz_artist_id"
    MUSICBRAINZ_ALBUM_ARTIST_ID = "musicbrainz_album_artist_id"


# Raw tag names, lower-cased with spaces and hyphens as underscores, to keys.
# (Picard writes MUSICBRAINZ_TRACKID for the recording and
# MUSICBRAINZ_RELEASETRACKID for the track on a release.)
_ALIASES: Final[Mapping[str, MetadataKey]] = {
    "title": MetadataKey.TITLE,
    "tit2": MetadataKey.TITLE,
    "artist": MetadataKey.ARTIST,
    "tpe1": MetadataKey.ARTIST,
    "album": MetadataKey.ALBUM,
    "talb": MetadataKey.ALBUM,
    "album_artist": MetadataKey.ALBUM_ARTIST,
    "albumartist": MetadataKey.ALBUM_ARTIST,
    "tpe2": MetadataKey.ALBUM_ARTIST,
    "composer": MetadataKey.COMPOSER,
    "date": MetadataKey.DATE,
    "year": MetadataKey.DATE,
    "tdrc": MetadataKey.DATE,
    "genre": MetadataKey.GENRE,
    "track": MetadataKey.TRACK_NUMBER,
    "tracknumber": MetadataKey.TRACK_NUMBER,
    "trck": MetadataKey.TRACK_NUMBER,
    "disc": MetadataKey.DISC_NUMBER,
    "discnumber": MetadataKey.DISC_NUMBER,
    "tpos": MetadataKey.DISC_NUMBER,
    "isrc": MetadataKey.ISRC,
    "tsrc": MetadataKey.ISRC,
    "label": MetadataKey.LABEL,
    "publisher": MetadataKey.LABEL,
    "organization": MetadataKey.LABEL,
    "copyright": MetadataKey.COPYRIGHT,
    "tcop": MetadataKey.COPYRIGHT,
    "language": MetadataKey.LANGUAGE,
    "replaygain_track_gain": MetadataKey.REPLAYGAIN_TRACK_GAIN_DB,
    "replaygain_track_peak": MetadataKey.REPLAYGAIN_TRACK_PEAK,
    "replaygain_album_gain": MetadataKey.REPLAYGAIN_ALBUM_GAIN_DB,
    "replaygain_album_peak": MetadataKey.REPLAYGAIN_ALBUM_PEAK,
    "musicbrainz_trackid": MetadataKey.MUSICBRAINZ_RECORDING_ID,
    "musicbrainz_track_id": MetadataKey.MUSICBRAINZ_RECORDING_ID,
    "musicbrainz_recordingid": MetadataKey.MUSICBRAINZ_RECORDING_ID,
    "musicbrainz_releasetrackid": MetadataKey.MUSICBRAINZ_TRACK_ID,
    "musicbrainz_release_track_id": MetadataKey.MUSICBRAINZ_TRACK_ID,
    "musicbrainz_albumid": MetadataKey.MUSICBRAINZ_RELEASE_ID,
    "musicbrainz_album_id": MetadataKey.MUSICBRAINZ_RELEASE_ID,
    "musicbrainz_releasegroupid": MetadataKey.MUSICBRAINZ_RELEASE_GROUP_ID,
    "musicbrainz_release_group_id": MetadataKey.MUSICBRAINZ_RELEASE_GROUP_ID,
    "musicbrainz_artistid": MetadataKey.MUSICBRAINZ_ARTIST_ID,
    "musicbrainz_artist_id": MetadataKey.MUSICBRAINZ_ARTIST_ID,
    "musicbrainz_albumartistid": MetadataKey.MUSICBRAINZ_ALBUM_ARTIST_ID,
    "musicbrainz_album_artist_id": MetadataKey.MUSICBRAINZ_ALBUM_ARTIST_ID,
}

_ISRC: Final = re.compile(r"[A-Z]{2}[A-Z0-9]{3}[0-9]{7}")
_POSITION: Final = re.compile(r"0*([0-9]{1,4})(?:\s*/\s*0*([0-9]{1,4}))?")
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def key_for(raw_name: str) -> MetadataKey | None:
    """The key a raw tag name stands for, or None for a tag cadenza does not record."""
    name = re.sub(r"[\s\-]+", "_", raw_name.strip().lower())
    return _ALIASES.get(name)


def clean_text(value: str) -> str:
    """``value`` without control, format or separator characters, whitespace runs
    collapsed, cut to :data:`MAX_VALUE_CHARS` characters."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in value[: MAX_VALUE_CHARS * 4]
        if ch.isspace() or unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    return " ".join(kept.split())[:MAX_VALUE_CHARS].rstrip()


def _number(text: str) -> float | None:
    match = _NUMBER.match(text)
    if match is None:
        return None
    try:
        return float(match.group(0))
    except ValueError:
        return None


def _normalise(key: MetadataKey, text: str) -> str | None:
    """A cleaned value in its key's canonical form; None when it does not fit the key."""
    if key is MetadataKey.ISRC:
        code = text.replace("-", "").replace(" ", "").upper()
        return code if _ISRC.fullmatch(code) else None
    if key in (MetadataKey.TRACK_NUMBER, MetadataKey.DISC_NUMBER):
        match = _POSITION.fullmatch(text)
        if match is None or int(match.group(1)) == 0:
            return None
        number, total = match.group(1), match.group(2)
        return number if total is None else f"{number}/{total}"
    if key in (MetadataKey.REPLAYGAIN_TRACK_GAIN_DB, MetadataKey.REPLAYGAIN_ALBUM_GAIN_DB):
        gain = _number(text)  # "-6.20 dB"
        return None if gain is None or not -64.0 <= gain <= 64.0 else f"{gain:.2f}"
    if key in (MetadataKey.REPLAYGAIN_TRACK_PEAK, MetadataKey.REPLAYGAIN_ALBUM_PEAK):
        peak = _number(text)
        return None if peak is None or not 0.0 <= peak <= 16.0 else f"{peak:.6f}"
    if key.value.startswith("musicbrainz_"):
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return None
    return text


def clean_metadata(raw: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Raw ``(tag name, value)`` pairs as ``(key, value)`` pairs of known keys, cleaned
    (see the module docstring); the first usable value of a key wins."""
    found: dict[MetadataKey, str] = {}
    for index, (name, value) in enumerate(raw):
        if index >= MAX_RAW_TAGS:
            break
        key = key_for(name)
        if key is None or key in found:
            continue
        text = clean_text(value)
        normalised = _normalise(key, text) if text else None
        if normalised:
            found[key] = normalised
    return tuple((key.value, found[key]) for key in MetadataKey if key in found)


def session_data_id(key: str) -> str:
    """The HLS ``EXT-X-SESSION-DATA`` DATA-ID of a key, reverse-DNS as RFC 8216
    4.3.4.4 asks: ``com.cadenza.title``, ``com.cadenza.replaygain-track-gain-db``."""
    return SESSION_DATA_PREFIX + key.replace("_", "-")


def quoted_string_value(value: str) -> str:
    """A value as an RFC 8216 4.2 quoted-string may hold it: no double quote, CR or
    LF (double quotes become single ones; the rest is already clean)."""
    return clean_text(value).replace('"', "'")
