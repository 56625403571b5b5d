"""Segment already-encoded rungs into CMAF, HLS and DASH without decoding.

``cadenza segment`` takes one file per rung (AAC-LC in MP4/M4A or ADTS, Opus
in Ogg or MP4, FLAC native or in MP4), reads its coded packets with PyAV's
demuxer and hands them, byte for byte, to the same :class:`Segmenter` that
``cadenza package`` feeds from its encoders.  Nothing is decoded or encoded.

Each input is a :class:`~cadenza.packager.rung_input.RungInput` (priming and
duration are worked out there, from :mod:`cadenza.packager.rung_headers`).

- Alignment: rungs of one codec must share a sample rate and a frame duration,
  and are cut into the same number of frames per segment; the finished
  timelines are compared and a rung that does not line up is refused.

The output folder is built and committed exactly like ``cadenza package``'s
(:mod:`cadenza.packager.output`, :mod:`cadenza.packager.publish`), under the same
republishing rule (:mod:`cadenza.packager.fingerprint`): the rung files are hashed into a
fingerprint (:func:`fingerprint_rungs`), an up-to-date track is skipped, and a track
segmented again gets a fresh version tag in every file name, the earlier packaging's
files being carried over until ``cadenza gc``, so nothing published changes until the
new set is whole.  This module imports neither
numpy nor the encoders, so the command stays small and quick to start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Final

from cadenza.manifests.fingerprint import Fingerprint
from cadenza.manifests.model import Codec, Presentation, Rendition, SegmentLayout
from cadenza.packager.errors import InputError, OutputError
from cadenza.packager.fingerprint import (
    Decision,
    Verdict,
    cadenza_version,
    decide,
    hash_file,
    local_previous,
    source_location,
)
from cadenza.packager.output import commit_track, new_temp_dir, oserror_reason
from cadenza.packager.publish import share_group_inits, write_manifests
from cadenza.packager.rung_input import RungInput
from cadenza.packager.segmenter import DEFAULT_SEGMENT_DURATION, RungPlan, Segmenter

__all__ = [
    "RemuxOptions",
    "RemuxResult",
    "RungInput",
    "fingerprint_rungs",
    "nominal_bitrates",
    "remux_track",
    "rendition_ids",
]

# A measured bit rate within 3 % of one of these is taken to be that nominal rate.
_NOMINAL_KBPS: Final = (
    8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320, 384, 448,
    512,
)  # fmt: skip
_NOMINAL_TOLERANCE: Final = 0.03


@dataclass(frozen=True, slots=True)
class RemuxOptions:
    segment_duration: Fraction = DEFAULT_SEGMENT_DURATION  # seconds
    single_file: bool = False
    force: bool = False


@dataclass(slots=True)
class RemuxResult:
    track_id: str
    status: str  # "packaged" | "skipped"
    output: Path
    reason: str | None = None  # why skipped or segmented again (Decision.reason)
    presentation: Presentation | None = None
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def fingerprint_rungs(
    inputs: Sequence[Path],
    *,
    segment_duration: Fraction = DEFAULT_SEGMENT_DURATION,
    single_file: bool = False,
) -> Fingerprint:
    """The fingerprint of a track segmented from ``inputs``, read in chunks.

    The rung files together are the source: ``source_sha256`` is the SHA-256 of the
    ladder text, which lists each rung file's own SHA-256 and size in ladder order (so
    a changed, added, dropped or reordered rung changes both), and the location is
    every file's absolute path. Nothing is decoded, so no ladder of codecs and bit
    rates is known beyond the files themselves.
    """
    hashed = [hash_file(path) for path in inputs]
    ladder = json.dumps(
        [{"sha256": digest, "size_bytes": size} for digest, size in hashed],
        separators=(",", ":"),
    )
    location = "\n".join(source_location(path, str(path)) for path in inputs)
    layout = SegmentLayout.SINGLE if single_file else SegmentLayout.SEPARATE
    return Fingerprint(
        source_sha256=hashlib.sha256(ladder.encode()).hexdigest(),
        source_size_bytes=sum(size for _digest, size in hashed),
        source_name=", ".join(path.name for path in inputs),
        source_location_sha256=hashlib.sha256(location.encode()).hexdigest(),
        source_location=", ".join(str(path) for path in inputs),
        ladder=ladder,
        segment_duration_ticks=segment_duration.numerator,
        segment_duration_timescale=segment_duration.denominator,
        options=(("input", "encoded rungs"), ("layout", layout.value)),  # sorted, as read back
        cadenza_version=cadenza_version(),
    )


def _check_compatible(rungs: Sequence[RungInput]) -> None:
    """Rungs of one codec must cut at identical sample boundaries: same rate, same frames."""
    first: dict[Codec, RungInput] = {}
    for rung in rungs:
        ref = first.setdefault(rung.codec, rung)
        if rung.sample_rate_hz != ref.sample_rate_hz:
            raise InputError(
                rung.path,
                f"{rung.codec} at {rung.sample_rate_hz} Hz, but {ref.path.name} is at "
                f"{ref.sample_rate_hz} Hz: the rungs of one codec must share a sample rate so "
                "their segments align",
            )
        if rung.frame_ticks != ref.frame_ticks:
            raise InputError(
                rung.path,
                f"{rung.codec} frames of {rung.frame_ticks} samples, but {ref.path.name} has "
                f"{ref.frame_ticks}: the rungs of one codec must share a frame size so their "
                "segments align",
            )


def _check_aligned(rungs: Sequence[RungInput], renditions: Sequence[Rendition]) -> None:
    first: dict[Codec, tuple[RungInput, Rendition]] = {}
    for rung, rendition in zip(rungs, renditions, strict=True):
        ref_rung, ref = first.setdefault(rendition.codec, (rung, rendition))
        ours = [(s.start_ticks, s.duration_ticks) for s in rendition.segments]
        theirs = [(s.start_ticks, s.duration_ticks) for s in ref.segments]
        if ours != theirs:
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                min(len(ours), len(theirs)),
            )
            raise InputError(
                rung.path,
                f"its segments do not line up with {ref_rung.path.name}'s from segment {at + 1} "
                f"({len(ours)} segments against {len(theirs)}): the rungs of one codec must "
                "hold the same frames",
            )


def _stream_bitrate(rung: RungInput, rendition: Rendition) -> int:
    """The stream's bit rate as the container declares it, else measured over the payload."""
    return rung.declared_bitrate_bps or round(
        rung.stats.payload_bytes * 8 * rendition.timescale / rendition.duration_ticks
    )


def _nominal(bps: int) -> int | None:
    for kbps in _NOMINAL_KBPS:
        if abs(bps - kbps * 1000) <= _NOMINAL_TOLERANCE * kbps * 1000:
            return kbps * 1000
    return None


def nominal_bitrates(codecs: Sequence[Codec], stream_bps: Sequence[int]) -> list[int | None]:
    """Each lossy rung's nominal bit rate (None for lossless ones).

    Encoders miss their target by a little, so a rate within 3 % of a customary one
    (64, 128, 256 kb/s...) is taken to be it; when two rungs of a codec would take the
    same one, the closer keeps it and the other keeps its own rate in whole kb/s
    (FFmpeg's AAC encoder asked for 320 kb/s may deliver 261).
    """
    pairs = list(zip(codecs, stream_bps, strict=True))
    snapped = [None if c.lossless else _nominal(bps) for c, bps in pairs]
    takers: dict[tuple[Codec, int], list[int]] = {}
    for index, (codec, value) in enumerate(zip(codecs, snapped, strict=True)):
        if value is not None:
            takers.setdefault((codec, value), []).append(index)
    for (_codec, value), indices in takers.items():
        keep = min(indices, key=lambda i: abs(stream_bps[i] - value))
        for index in indices:
            if index != keep:
                snapped[index] = None
    return [
        None if codec.lossless else snapped[index] or round(bps / 1000) * 1000
        for index, (codec, bps) in enumerate(pairs)
    ]


def rendition_ids(codecs: Sequence[Codec], nominal_bps: Sequence[int | None]) -> list[str]:
    """``aac-128k``, ``opus-64k``, ``flac``: codec and nominal kb/s, made unique with a suffix."""
    ids: list[str] = []
    for codec, bps in zip(codecs, nominal_bps, strict=True):
        base = str(codec) if bps is None else f"{codec}-{bps // 1000}k"
        name, n = base, 1
        while name in ids:
            n += 1
            name = f"{base}-{n}"
        ids.append(name)
    return ids


def _segment_rung(rung: RungInput, plan: RungPlan, folder: Path) -> Rendition:
    segmenter = Segmenter(plan, folder, frame_ticks=rung.frame_ticks)
    try:
        for data, ticks in rung.packets():
            segmenter.add(data, ticks)
        priming, duration = rung.timing()
        return segmenter.finish(
            codec_private=rung.codec_private, encoder_delay_ticks=priming, duration_ticks=duration
        )
    finally:
        segmenter.abort()


def _presentation(
    track_id: str,
    rungs: Sequence[RungInput],
    renditions: Sequence[Rendition],
    segment_duration: Fraction,
    fingerprint: Fingerprint,
) -> Presentation:
    """Timescale of the first rung; duration of the longest rung whose duration is exact
    (edit list, Ogg granule, FLAC), else of the longest rung: padding is no content."""
    timescale = renditions[0].timescale
    exact = [r for g, r in zip(rungs, renditions, strict=True) if g.exact_duration]
    duration = max(-(-r.duration_ticks * timescale // r.timescale) for r in exact or renditions)
    return Presentation(
        track_id=track_id,
        timescale=timescale,
        duration_ticks=duration,
        renditions=tuple(renditions),
        target_segment_duration_ticks=int(segment_duration * timescale),
        fingerprint=fingerprint,
    )


def _decide(
    track_id: str, inputs: Sequence[Path], final_dir: Path, options: RemuxOptions
) -> Decision:
    """``cadenza package``'s rule (:func:`cadenza.packager.fingerprint.decide`) for the
    rung files' fingerprint; a collision is an :class:`InputError` naming both sets."""
    fingerprint = fingerprint_rungs(
        inputs, segment_duration=options.segment_duration, single_file=options.single_file
    )
    decision = decide(fingerprint, local_previous(final_dir), force=options.force)
    if decision.verdict is Verdict.COLLISION:
        raise InputError(inputs[0], decision.collision_error(track_id))
    return decision


def remux_track(
    track_id: str, inputs: Sequence[Path], out_root: Path, options: RemuxOptions
) -> RemuxResult:
    """Segment ``inputs`` (one file per rung, in ladder order) into ``out_root/<track_id>/``.

    Raises :class:`~cadenza.packager.errors.PackagerError` (an :class:`InputError` naming the
    file, or an :class:`OutputError`; an :class:`InputError` too when another set of
    files already made this track, without ``force``); nothing is left behind on failure.
    """
    started = time.perf_counter()
    final_dir = out_root / track_id
    result = RemuxResult(track_id=track_id, status="skipped", output=final_dir)
    if not inputs:
        raise InputError(out_root, "no rung files given")
    decision = _decide(track_id, inputs, final_dir, options)
    result.reason = decision.reason
    if decision.verdict is Verdict.SKIP:
        return result
    layout = SegmentLayout.SINGLE if options.single_file else SegmentLayout.SEPARATE
    rungs: list[RungInput] = []
    work_dir: Path | None = None
    try:
        for path in inputs:
            rungs.append(RungInput(path))
        _check_compatible(rungs)
        work_dir = new_temp_dir(out_root, track_id)
        renditions = []
        for index, rung in enumerate(rungs):
            plan = RungPlan(
                rendition_id=f"rung-{index + 1}",
                codec=rung.codec,
                bitrate_bps=None,
                sample_rate_hz=rung.sample_rate_hz,
                channels=rung.channels,
                bits_per_sample=rung.bits_per_sample,
                segment_duration=options.segment_duration,
                layout=layout,
                name_tag=decision.name_tag,
            )
            renditions.append(_segment_rung(rung, plan, work_dir / plan.rendition_id))
            rung.close()
        _check_aligned(rungs, renditions)
        codecs = [r.codec for r in rungs]
        targets = nominal_bitrates(
            codecs, [_stream_bitrate(g, r) for g, r in zip(rungs, renditions, strict=True)]
        )
        named = []
        for rendition, rendition_id, target in zip(
            renditions, rendition_ids(codecs, targets), targets, strict=True
        ):
            os.rename(work_dir / rendition.id, work_dir / rendition_id)
            named.append(dataclasses.replace(rendition, id=rendition_id, target_bitrate_bps=target))
        presentation = _presentation(
            track_id, rungs, named, options.segment_duration, decision.fingerprint
        )
        share_group_inits(work_dir, presentation)
        write_manifests(work_dir, presentation)
        commit_track(work_dir, final_dir)
        work_dir = None
    except OSError as exc:
        raise OutputError(exc.filename or out_root, oserror_reason(exc)) from exc
    finally:
        for rung in rungs:
            rung.close()
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
    result.status = "packaged"
    result.presentation = presentation
    result.wall_s = time.perf_counter() - started
    return result
