"""Bitrate ladders: which renditions to encode, the presets, and the ladder file format.

The one model the packager (which encodes a ladder) and the ABR tools (which
simulate and recommend one) share.  A ladder is a preset name (``music``,
``lossy``, ``speech``, ``lossless``) or the text of a TOML or JSON file::

    name = "my-ladder"
    [[rung]]
    codec = "aac"          # aac | opus | flac
    bitrate_kbps = 128     # required for lossy codecs, forbidden for flac
    sample_rate_hz = 48000 # optional: default is chosen per codec and source
    channels = 2           # optional: 1, 2 or 6; default follows the source
    profile = "lc"         # aac only; "he"/"he-v2" are refused (see below)

JSON uses the same keys: ``{"name": ..., "rung": [{...}, ...]}`` (``rungs`` is
accepted too).  :func:`parse_ladder` is strict and pure (text in, model out):
reading the file is the caller's job.  It fails early with an
:class:`InvalidLadderError` that names the rung and the key.
"""

from __future__ import annotations

import enum
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cadenza.manifests.errors import InvalidLadderError, LadderSyntaxError
from cadenza.manifests.model import Codec

AAC_SAMPLE_RATES_HZ: Final = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_SAMPLE_RATE_HZ: Final = 48000
SUPPORTED_CHANNELS: Final = (1, 2, 6)
MIN_SOURCE_RATE_HZ: Final = 8000
MAX_SOURCE_RATE_HZ: Final = 192000
# Rungs of one codec in a ladder: players switch among them, and a recommender
# searches every subset of candidates up to this size.
MAX_RUNGS: Final = 6

# Encoder limits as FFmpeg's aac and libopus accept them, in bit/s.
BITRATE_RANGE_BPS: Final = {
    Codec.AAC: (16_000, 512_000),
    Codec.OPUS: (6_000, 510_000),
}


class LadderFormat(enum.StrEnum):
    """The two spellings of a ladder file (the file suffix without its dot)."""

    TOML = "toml"
    JSON = "json"


class AacProfile(enum.StrEnum):
    LC = "lc"
    HE = "he"
    HE_V2 = "he-v2"


@dataclass(frozen=True, slots=True)
class Rung:
    codec: Codec
    bitrate_bps: int | None = None
    sample_rate_hz: int | None = None
    channels: int | None = None
    profile: AacProfile = AacProfile.LC

    @property
    def id(self) -> str:
        """Folder and representation id: ``aac-128k``, ``opus-64k``, ``flac``."""
        if self.bitrate_bps is None:
            return self.codec.value if self.channels is None else f"{self.codec}-{self.channels}ch"
        base = f"{self.codec}-{self.bitrate_bps // 1000}k"
        return base if self.channels is None else f"{base}-{self.channels}ch"


@dataclass(frozen=True, slots=True)
class Ladder:
    name: str
    rungs: tuple[Rung, ...]

    def bitrates_bps(self, codec: Codec) -> tuple[int, ...]:
        """The ascending bitrates of ``codec``'s lossy rungs (empty if it has none)."""
        rates = {r.bitrate_bps for r in self.rungs if r.codec is codec}
        return tuple(sorted(rate for rate in rates if rate is not None))


def _lossy(codec: Codec, *kbps: int) -> tuple[Rung, ...]:
    return tuple(Rung(codec, bitrate_bps=k * 1000) for k in kbps)


PRESETS: Final[Mapping[str, Ladder]] = {
    "music": Ladder(
        "music",
        (*_lossy(Codec.AAC, 64, 128, 256, 320), *_lossy(Codec.OPUS, 64, 128), Rung(Codec.FLAC)),
    ),
    "lossy": Ladder("lossy", (*_lossy(Codec.AAC, 64, 128, 256), *_lossy(Codec.OPUS, 64, 128))),
    "speech": Ladder("speech", (*_lossy(Codec.AAC, 32, 64), *_lossy(Codec.OPUS, 24, 48))),
    "lossless": Ladder("lossless", (Rung(Codec.FLAC),)),
}
# What ``cadenza package`` encodes without ``--ladder``, and the baseline the ABR
# simulator and ladder recommender play.
DEFAULT_PRESET: Final = "music"
DEFAULT_LADDER: Final = PRESETS[DEFAULT_PRESET]

_RUNG_KEYS: Final = frozenset({"codec", "bitrate_kbps", "sample_rate_hz", "channels", "profile"})


def parse_ladder(text: str, *, fmt: LadderFormat, default_name: str = "custom") -> Ladder:
    """The ladder a TOML or JSON document spells, validated (see :func:`validate_ladder`).

    ``default_name`` names a document without ``name`` (callers pass the file's stem).
    """
    try:
        data: object = tomllib.loads(text) if fmt is LadderFormat.TOML else json.loads(text)
    except ValueError as exc:  # TOMLDecodeError and JSONDecodeError both are
        raise LadderSyntaxError(fmt.value, str(exc)) from exc
    return ladder_from_document(data, default_name=default_name)


def ladder_from_document(data: object, *, default_name: str = "custom") -> Ladder:
    """Validate a decoded ladder document (a table/object with a ``rung`` list)."""
    if not isinstance(data, dict):
        raise InvalidLadderError("document", "must be a table/object with a 'rung' list")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise InvalidLadderError("name", "must be a non-empty string")
    rungs_raw = data.get("rung", data.get("rungs"))
    if not isinstance(rungs_raw, list) or not rungs_raw:
        raise InvalidLadderError("rung", "must be a non-empty list of rungs")
    rungs = tuple(_parse_rung(i, r) for i, r in enumerate(rungs_raw, start=1))
    ladder = Ladder(name, rungs)
    validate_ladder(ladder)
    return ladder


def _int_field(where: str, raw: dict[str, object], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLadderError(where, f"{key} must be an integer, got {value!r}")
    return value


def _parse_rung(index: int, raw: object) -> Rung:
    where = f"rung {index}"
    if not isinstance(raw, dict):
        raise InvalidLadderError(where, "must be a table/object")
    unknown = sorted(set(raw) - _RUNG_KEYS)
    if unknown:
        raise InvalidLadderError(where, f"unknown key(s) {', '.join(unknown)}")
    codec_raw = raw.get("codec")
    try:
        codec = Codec(str(codec_raw).lower())
    except ValueError:
        known = ", ".join(c.value for c in Codec)
        raise InvalidLadderError(where, f"unknown codec {codec_raw!r} (known: {known})") from None
    profile_raw = raw.get("profile", "lc")
    try:
        profile = AacProfile(str(profile_raw).lower())
    except ValueError:
        raise InvalidLadderError(where, f"unknown profile {profile_raw!r} (known: lc)") from None
    kbps = _int_field(where, raw, "bitrate_kbps")
    return Rung(
        codec=codec,
        bitrate_bps=None if kbps is None else kbps * 1000,
        sample_rate_hz=_int_field(where, raw, "sample_rate_hz"),
        channels=_int_field(where, raw, "channels"),
        profile=profile,
    )


def validate_ladder(ladder: Ladder) -> None:
    """Check every rung on its own, then the ladder as a whole: distinct ids, at most
    :data:`MAX_RUNGS` rungs and one sample rate per codec."""
    seen: dict[str, int] = {}
    for index, rung in enumerate(ladder.rungs, start=1):
        where = f"rung {index} ({rung.id})"
        _validate_rung(where, rung)
        if rung.id in seen:
            raise InvalidLadderError(
                where, f"duplicates rung {seen[rung.id]}; each rung needs its own id"
            )
        seen[rung.id] = index
    for codec in Codec:
        rungs = [r for r in ladder.rungs if r.codec is codec]
        if len(rungs) > MAX_RUNGS:
            raise InvalidLadderError(
                codec.value, f"{len(rungs)} rungs; a ladder has at most {MAX_RUNGS} per codec"
            )
        rates = {r.sample_rate_hz for r in rungs}
        if len(rates) > 1:
            raise InvalidLadderError(
                codec.value,
                "all rungs of one codec must share a sample rate so that players can switch "
                f"at identical sample boundaries; got {sorted(rates, key=str)}",
            )


def _validate_rung(where: str, rung: Rung) -> None:
    if rung.profile is not AacProfile.LC:
        if rung.codec is not Codec.AAC:
            raise InvalidLadderError(where, "profile applies to aac only")
        raise InvalidLadderError(
            where,
            f"AAC profile {rung.profile.value!r} (HE-AAC) is not available: FFmpeg's built-in "
            "aac encoder only writes AAC-LC and would silently mislabel the stream. "
            "Use profile 'lc', or Opus for low bitrates.",
        )
    if rung.codec.lossless:
        if rung.bitrate_bps is not None:
            raise InvalidLadderError(where, "flac is lossless: remove bitrate_kbps")
    else:
        if rung.bitrate_bps is None:
            raise InvalidLadderError(where, f"{rung.codec} needs bitrate_kbps")
        low, high = BITRATE_RANGE_BPS[rung.codec]
        if not low <= rung.bitrate_bps <= high:
            raise InvalidLadderError(
                where,
                f"bitrate {rung.bitrate_bps // 1000} kb/s is outside {rung.codec}'s range "
                f"{low // 1000}-{high // 1000} kb/s",
            )
    if rung.channels is not None and rung.channels not in SUPPORTED_CHANNELS:
        raise InvalidLadderError(where, f"channels must be 1, 2 or 6 (5.1), got {rung.channels}")
    rate = rung.sample_rate_hz
    if rate is None:
        return
    if rung.codec is Codec.AAC and rate not in AAC_SAMPLE_RATES_HZ:
        rates = ", ".join(str(r) for r in AAC_SAMPLE_RATES_HZ)
        raise InvalidLadderError(where, f"aac sample rate must be one of {rates} Hz, got {rate}")
    if rung.codec is Codec.OPUS and rate != OPUS_SAMPLE_RATE_HZ:
        raise InvalidLadderError(where, f"opus in MP4 always runs at 48000 Hz, got {rate}")
    if rung.codec is Codec.FLAC and not MIN_SOURCE_RATE_HZ <= rate <= MAX_SOURCE_RATE_HZ:
        raise InvalidLadderError(where, f"flac sample rate must be 8000-192000 Hz, got {rate}")
