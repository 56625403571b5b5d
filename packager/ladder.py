"""Ladder files as the packager reads them, and how a rung meets a source.

The ladder model, the presets and the strict parser of ladder text live in
:mod:`cadenza.manifests.ladder` (the ABR tools share them); this module reads
the file a ``--ladder`` names and turns the model's errors into
:class:`~cadenza.packager.errors.LadderError`.
"""

from __future__ import annotations

from pathlib import Path

from cadenza.manifests.errors import InvalidLadderError, LadderSyntaxError
from cadenza.manifests.ladder import (
    OPUS_SAMPLE_RATE_HZ,
    PRESETS,
    SUPPORTED_CHANNELS,
    Ladder,
    LadderFormat,
    Rung,
    parse_ladder,
)
from cadenza.manifests.model import Codec
from cadenza.packager.errors import LadderError


def load_ladder(spec: str) -> Ladder:
    """A preset name, or the path of a ``.toml`` or ``.json`` ladder file."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    try:
        fmt = LadderFormat(path.suffix.lower().removeprefix("."))
    except ValueError:
        known = ", ".join(sorted(PRESETS))
        raise LadderError(spec, f"not a preset ({known}) nor a .toml/.json ladder file") from None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LadderError(spec, f"cannot read ladder file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LadderError(spec, f"not valid {fmt.value.upper()}: {exc}") from exc
    try:
        return parse_ladder(text, fmt=fmt, default_name=path.stem)
    except LadderSyntaxError as exc:
        raise LadderError(spec, exc.reason) from exc
    except InvalidLadderError as exc:
        raise LadderError(exc.where, exc.reason) from exc


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
