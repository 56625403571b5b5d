"""Bitrate ladders: which renditions to encode.

A ladder is a preset name (``music``, ``speech``, ``lossless``) or a TOML or
JSON file::

    name = "my-ladder"
    [[rung]]
    codec = "aac"          # aac | opus | flac
    bitrate_kbps = 128     # required for lossy codecs, forbidden for flac
    sample_rate_hz = 48000 # optional: default is chosen per codec and source
    channels = 2           # optional: 1, 2 or 6; default follows the source
    profile = "lc"         # aac only; "he"/"he-v2" are refused (see below)

JSON uses the same keys: ``{"name": ..., "rung": [{...}, ...]}`` (``rungs`` is
accepted too).  Validation fails early with a :class:`LadderError` that names
the rung and the key.
"""

from __future__ import annotations

import enum
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cadenza.manifests.model import Codec
from cadenza.packager.errors import LadderError

AAC_SAMPLE_RATES_HZ: Final = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_SAMPLE_RATE_HZ: Final = 48000
SUPPORTED_CHANNELS: Final = (1, 2, 6)
MIN_SOURCE_RATE_HZ: Final = 8000
MAX_SOURCE_RATE_HZ: Final = 192000

# Encoder limits as FFmpeg's aac and libopus accept them, in bit/s.
BITRATE_RANGE_BPS: Final = {
    Codec.AAC: (16_000, 512_000),
    Codec.OPUS: (6_000, 510_000),
}


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


def _lossy(codec: Codec, *kbps: int) -> tuple[Rung, ...]:
    return tuple(Rung(codec, bitrate_bps=k * 1000) for k in kbps)


PRESETS: Final[dict[str, Ladder]] = {
    "music": Ladder(
        "music",
        (*_lossy(Codec.AAC, 64, 128, 256, 320), *_lossy(Codec.OPUS, 64, 128), Rung(Codec.FLAC)),
    ),
    "lossy": Ladder("lossy", (*_lossy(Codec.AAC, 64, 128, 256), *_lossy(Codec.OPUS, 64, 128))),
    "speech": Ladder("speech", (*_lossy(Codec.AAC, 32, 64), *_lossy(Codec.OPUS, 24, 48))),
    "lossless": Ladder("lossless", (Rung(Codec.FLAC),)),
}

_RUNG_KEYS: Final = frozenset({"codec", "bitrate_kbps", "sample_rate_hz", "channels", "profile"})


def load_ladder(spec: str) -> Ladder:
    """A preset name, or the path of a ``.toml`` or ``.json`` ladder file."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix.lower() not in (".toml", ".json"):
        known = ", ".join(sorted(PRESETS))
        raise LadderError(spec, f"not a preset ({known}) nor a .toml/.json ladder file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LadderError(spec, f"cannot read ladder file: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            data: object = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LadderError(spec, f"not valid {path.suffix[1:].upper()}: {exc}") from exc
    return parse_ladder(data, default_name=path.stem)


def parse_ladder(data: object, *, default_name: str = "custom") -> Ladder:
    """Validate a decoded ladder document."""
    if not isinstance(data, dict):
        raise LadderError("document", "must be a table/object with a 'rung' list")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise LadderError("name", "must be a non-empty string")
    rungs_raw = data.get("rung", data.get("rungs"))
    if not isinstance(rungs_raw, list) or not rungs_raw:
        raise LadderError("rung", "must be a non-empty list of rungs")
    rungs = tuple(_parse_rung(i, r) for i, r in enumerate(rungs_raw, start=1))
    ladder = Ladder(name, rungs)
    validate_ladder(ladder)
    return ladder


def _int_field(where: str, raw: dict[str, object], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LadderError(where, f"{key} must be an integer, got {value!r}")
    return value


def _parse_rung(index: int, raw: object) -> Rung:
    where = f"rung {index}"
    if not isinstance(raw, dict):
        raise LadderError(where, "must be a table/object")
    unknown = sorted(set(raw) - _RUNG_KEYS)
    if unknown:
        raise LadderError(where, f"unknown key(s) {', '.join(unknown)}")
    codec_raw = raw.get("codec")
    try:
        codec = Codec(str(codec_raw).lower())
    except ValueError:
        known = ", ".join(c.value for c in Codec)
        raise LadderError(where, f"unknown codec {codec_raw!r} (known: {known})") from None
    profile_raw = raw.get("profile", "lc")
    try:
        profile = AacProfile(str(profile_raw).lower())
    except ValueError:
        raise LadderError(where, f"unknown profile {profile_raw!r} (known: lc)") from None
    kbps = _int_field(where, raw, "bitrate_kbps")
    return Rung(
        codec=codec,
        bitrate_bps=None if kbps is None else kbps * 1000,
        sample_rate_hz=_int_field(where, raw, "sample_rate_hz"),
        channels=_int_field(where, raw, "channels"),
        profile=profile,
    )


def validate_ladder(ladder: Ladder) -> None:
    """Check every rung on its own, then the ladder as a whole."""
    seen: dict[str, int] = {}
    for index, rung in enumerate(ladder.rungs, start=1):
        where = f"rung {index} ({rung.id})"
        _validate_rung(where, rung)
        if rung.id in seen:
            raise LadderError(where, f"duplicates rung {seen[rung.id]}; each rung needs its own id")
        seen[rung.id] = index
    for codec in Codec:
        rates = {r.sample_rate_hz for r in ladder.rungs if r.codec is codec}
        if len(rates) > 1:
            raise LadderError(
                codec.value,
                "all rungs of one codec must share a sample rate so that players can switch "
                f"at identical sample boundaries; got {sorted(rates, key=str)}",
            )


def _validate_rung(where: str, rung: Rung) -> None:
    if rung.profile is not AacProfile.LC:
        if rung.codec is not Codec.AAC:
            raise LadderError(where, "profile applies to aac only")
        raise LadderError(
            where,
            f"AAC profile {rung.profile.value!r} (HE-AAC) is not available: FFmpeg's built-in "
            "aac encoder only writes AAC-LC and would silently mislabel the stream. "
            "Use profile 'lc', or Opus for low bitrates.",
        )
    if rung.codec.lossless:
        if rung.bitrate_bps is not None:
            raise LadderError(where, "flac is lossless: remove bitrate_kbps")
    else:
        if rung.bitrate_bps is None:
            raise LadderError(where, f"{rung.codec} needs bitrate_kbps")
        low, high = BITRATE_RANGE_BPS[rung.codec]
        if not low <= rung.bitrate_bps <= high:
            raise LadderError(
                where,
                f"bitrate {rung.bitrate_bps // 1000} kb/s is outside {rung.codec}'s range "
                f"{low // 1000}-{high // 1000} kb/s",
            )
    if rung.channels is not None and rung.channels not in SUPPORTED_CHANNELS:
        raise LadderError(where, f"channels must be 1, 2 or 6 (5.1), got {rung.channels}")
    rate = rung.sample_rate_hz
    if rate is None:
        return
    if rung.codec is Codec.AAC and rate not in AAC_SAMPLE_RATES_HZ:
        rates = ", ".join(str(r) for r in AAC_SAMPLE_RATES_HZ)
        raise LadderError(where, f"aac sample rate must be one of {rates} Hz, got {rate}")
    if rung.codec is Codec.OPUS and rate != OPUS_SAMPLE_RATE_HZ:
        raise LadderError(where, f"opus in MP4 always runs at 48000 Hz, got {rate}")
    if rung.codec is Codec.FLAC and not MIN_SOURCE_RATE_HZ <= rate <= MAX_SOURCE_RATE_HZ:
        raise LadderError(where, f"flac sample rate must be 8000-192000 Hz, got {rate}")


def resolve_sample_rate(rung: Rung, source_rate_hz: int) -> int:
    """The rate a rung encodes at, when the ladder leaves it open.

    AAC keeps the 44.1 kHz family for 44.1/88.2/176.4 kHz-family sources and
    uses 48 kHz otherwise; so every AAC rung of a track shares one rate and one
    set of segment boundaries.  Opus is always 48 kHz.  FLAC keeps the source.
    """
    if rung.sample_rate_hz is not None:
        return rung.sample_rate_hz
    if rung.codec is Codec.OPUS:
        return OPUS_SAMPLE_RATE_HZ
    if rung.codec is Codec.FLAC:
        return source_rate_hz
    return 44100 if source_rate_hz % 11025 == 0 else 48000


def resolve_channels(rung: Rung, source_channels: int) -> int:
    """Rung channels, or the source's: 1, 2 and 6 kept; 7.1 and wider -> 5.1; 3-5 -> stereo."""
    if rung.channels is not None:
        return rung.channels
    if source_channels in SUPPORTED_CHANNELS:
        return source_channels
    return 6 if source_channels > 6 else 2


def check_bitrate_fits(rung: Rung, sample_rate_hz: int, channels: int) -> None:
    """FFmpeg's AAC encoder caps a frame at 6144 bits per channel (ISO/IEC 14496-3)."""
    if rung.codec is Codec.AAC and rung.bitrate_bps is not None:
        ceiling_bps = 6144 * channels * sample_rate_hz // 1024
        if rung.bitrate_bps > ceiling_bps:
            raise LadderError(
                rung.id,
                f"{rung.bitrate_bps // 1000} kb/s exceeds AAC's ceiling of {ceiling_bps // 1000} "
                f"kb/s for {channels} channel(s) at {sample_rate_hz} Hz",
            )
