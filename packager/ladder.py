"""Ladder files as the packager reads them, and how a rung meets a source.

The ladder model, the presets and the strict parser of ladder text live in
:mod:`cadenza.manifests.ladder` (the ABR tools share them); this module reads
the file a ``--ladder`` names and turns the model's errors into
:class:`~cadenza.packager.errors.LadderError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cadenza.manifests.errors import InvalidLadderError, LadderSyntaxError
from cadenza.manifests.ladder import (
    AAC_SAMPLE_RATES_HZ,
    BITRATE_RANGE_BPS,
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

    AAC never runs above the source: a source below 44.1 kHz keeps its own rate,
    or the next AAC rate up for a rate AAC lacks (8, 11.025, 16, 22.05, 32 kHz
    sources stay as they are); above it, AAC keeps the 44.1 kHz family for
    44.1/88.2/176.4 kHz-family sources and uses 48 kHz otherwise.  Every AAC
    rung of a track shares one rate and one set of segment boundaries.  Opus is
    always 48 kHz.  FLAC keeps the source.
    """
    if rung.sample_rate_hz is not None:
        return rung.sample_rate_hz
    if rung.codec is Codec.OPUS:
        return OPUS_SAMPLE_RATE_HZ
    if rung.codec is Codec.FLAC:
        return source_rate_hz
    if source_rate_hz < 44100:
        return min(rate for rate in AAC_SAMPLE_RATES_HZ if rate >= source_rate_hz)
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


def aac_ceiling_bps(sample_rate_hz: int, channels: int) -> int:
    """AAC's most bits per second: 6144 bits per channel per 1024-sample frame."""
    return 6144 * channels * sample_rate_hz // 1024


# What a 5.1 rung's bitrate is scaled by from the ladder's stereo figure: five
# full-band channels where stereo has two (the LFE is narrow and costs little).
FULL_BAND_CHANNELS: Final = {1: 1, 2: 2, 6: 5}


@dataclass(frozen=True, slots=True)
class SourceShape:
    """What a ladder is fitted to: the source's rate and channels, and a lossy
    source's own bitrate (None for lossless or PCM sources, or when unknown)."""

    sample_rate_hz: int
    channels: int
    lossy_bitrate_bps: int | None = None


@dataclass(frozen=True, slots=True)
class FittedRung:
    """One rung as this source gets it: its id, rate, channels and bitrate settled."""

    rendition_id: str
    codec: Codec
    bitrate_bps: int | None
    sample_rate_hz: int
    channels: int
    downmix: bool = False  # a stereo downmix of a multichannel source


def _scaled_bps(rung: Rung, channels: int) -> int:
    """A ladder's (stereo) bitrate scaled to ``channels``, in whole kb/s, within the
    codec's range."""
    assert rung.bitrate_bps is not None
    kbps = rung.bitrate_bps * FULL_BAND_CHANNELS[channels] // (2 * 1000)
    return min(kbps * 1000, BITRATE_RANGE_BPS[rung.codec][1])


def _carried_bps(source: SourceShape, rung: FittedRung) -> tuple[int, str]:
    """The most a lossy rung of this source may carry, and why: AAC's frame ceiling
    (6144 bits per channel per 1024 samples, so 6 bits a sample) at the lower of the
    rung's rate and the source's, for every lossy codec (a source sampled at 8 kHz
    carries no more than that at 8 kHz, whatever the rung's rate), and a lossy
    source's own bitrate."""
    rate_hz = min(rung.sample_rate_hz, source.sample_rate_hz)
    cap = aac_ceiling_bps(rate_hz, rung.channels)
    why = f"the ceiling for {rung.channels} channel(s) at {rate_hz} Hz (6 bits a sample)"
    lossy = source.lossy_bitrate_bps
    if lossy is not None and lossy < cap:
        cap, why = lossy, "the lossy source's own bitrate"
    return cap, why


def _candidates(ladder: Ladder, source: SourceShape) -> list[tuple[str, FittedRung]]:
    """``(ladder rung id, rung)``: the source's own channels first, then, for a
    multichannel source, a stereo downmix of every lossy rung that follows the source."""
    own: list[tuple[str, FittedRung]] = []
    downmixes: list[tuple[str, FittedRung]] = []
    for rung in ladder.rungs:
        rate = resolve_sample_rate(rung, source.sample_rate_hz)
        channels = resolve_channels(rung, source.channels)
        if rung.bitrate_bps is None or rung.channels is not None or channels <= 2:
            bitrate, rendition_id = rung.bitrate_bps, rung.id
        else:
            bitrate = _scaled_bps(rung, channels)
            rendition_id = Rung(rung.codec, bitrate, channels=channels).id
            stereo = Rung(rung.codec, rung.bitrate_bps, channels=2)
            downmixes.append(
                (rung.id, FittedRung(stereo.id, rung.codec, rung.bitrate_bps, rate, 2, True))
            )
        own.append((rung.id, FittedRung(rendition_id, rung.codec, bitrate, rate, channels)))
    return own + downmixes


def fit_ladder(ladder: Ladder, source: SourceShape) -> tuple[tuple[FittedRung, ...], list[str]]:
    """The rungs this source gets, and a warning for each rung skipped or lowered.

    The rule (docs/packaging.md, "Source-aware ladders"):

    - a multichannel source (5.1) gets each lossy rung twice: at 5.1, its bitrate
      scaled by 5/2 (five full-band channels for stereo's two) within the codec's
      range, and as a stereo downmix at the ladder's bitrate;
    - no rung runs at a sample rate above the source's (Opus excepted: in MP4 it is
      always coded at 48 kHz, whatever the input);
    - no lossy rung carries more than the source: AAC's frame ceiling at the
      source's rate for the rung's channels, and a lossy source's own bitrate;
      a rung above that is skipped, except that a codec left with no rung of a
      channel count keeps its lowest, lowered to the cap;
    - two rungs that come out the same (5.1 scaling caps at the codec's maximum)
      are kept once.
    """
    warnings: list[str] = []
    fitted: list[tuple[int, FittedRung]] = []
    over: list[tuple[int, str, FittedRung, int, str]] = []
    seen: set[str] = set()
    for index, (ladder_id, rung) in enumerate(_candidates(ladder, source)):
        label = (
            ladder_id if rung.rendition_id == ladder_id else f"{ladder_id} as {rung.rendition_id}"
        )
        if rung.codec is not Codec.OPUS and rung.sample_rate_hz > source.sample_rate_hz:
            warnings.append(
                f"rung skipped: {label}: {rung.sample_rate_hz} Hz exceeds the source's "
                f"{source.sample_rate_hz} Hz"
            )
        elif rung.rendition_id in seen:
            warnings.append(f"rung skipped: {label}: the same as a rung already planned")
        elif rung.bitrate_bps is not None and rung.bitrate_bps > _carried_bps(source, rung)[0]:
            over.append((index, label, rung, *_carried_bps(source, rung)))
        else:
            seen.add(rung.rendition_id)
            fitted.append((index, rung))
    over.sort(key=lambda item: item[2].bitrate_bps or 0)
    for index, label, rung, cap_bps, why in over:
        assert rung.bitrate_bps is not None
        lowered_bps = cap_bps // 1000 * 1000
        parts = rung.rendition_id.split("-")  # codec, bitrate, [channels]
        new_id = "-".join([parts[0], f"{lowered_bps // 1000}k", *parts[2:]])
        taken = any((f.codec, f.channels) == (rung.codec, rung.channels) for _, f in fitted)
        if taken or lowered_bps < BITRATE_RANGE_BPS[rung.codec][0] or new_id in seen:
            warnings.append(
                f"rung skipped: {label}: {rung.bitrate_bps // 1000} kb/s exceeds "
                f"{cap_bps // 1000} kb/s, {why}"
            )
            continue
        warnings.append(
            f"rung lowered: {label}: {rung.bitrate_bps // 1000} kb/s exceeds "
            f"{cap_bps // 1000} kb/s, {why}; encoded as {new_id}"
        )
        seen.add(new_id)
        lowered = FittedRung(
            new_id, rung.codec, lowered_bps, rung.sample_rate_hz, rung.channels, rung.downmix
        )
        fitted.append((index, lowered))
    return tuple(rung for _, rung in sorted(fitted, key=lambda item: item[0])), warnings
