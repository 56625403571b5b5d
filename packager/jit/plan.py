"""Plan a track's presentation from a probe of its source, without encoding it.

:func:`plan_presentation` gives the presentation the batch packager
(:func:`cadenza.packager.track.package_track`) would record for the same source,
ladder and segment duration: the same rungs (:func:`cadenza.packager.track.plan_rungs`),
and every timing exactly (each rendition's segment count, every segment's start and
duration, ``encoder_delay_ticks``, ``duration_ticks``), from the rules of
:mod:`cadenza.packager.jit.timing`.  So the media playlists and the MPD's timelines are
byte-identical to the batch packager's.

What the batch packager *measures* is estimated (:mod:`cadenza.packager.jit.estimate`),
or left out:

- each segment's ``size_bytes`` and the rendition's ``average_bitrate_bps`` (HLS
  ``AVERAGE-BANDWIDTH``): from the target bitrate, or FLAC's PCM rate;
- ``peak_bitrate_bps`` (HLS ``BANDWIDTH``, the MPD's ``@bandwidth``, the init segment's
  ``btrt``/``esds`` maximum): a safe upper bound of what the segments reach;
- the loudness (the presentation's, and a stereo downmix rung's own): not measured,
  so the manifests carry no loudness figures (HLS ``com.cadenza.loudness.*`` session
  data, the MPD's loudness ``SupplementalProperty``);
- FLAC's STREAMINFO (``decoder_config``): the exact sample count, but its MD5 and its
  minimum and maximum frame sizes 0, which the FLAC format reads as "unknown".
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from cadenza.manifests.fingerprint import Fingerprint
from cadenza.manifests.ladder import Ladder
from cadenza.manifests.model import (
    Codec,
    Presentation,
    Rendition,
    Segment,
    SegmentLayout,
    SourceInfo,
)
from cadenza.packager import mp4
from cadenza.packager.jit.estimate import bitrate_bps, estimate_segment, segment_durations
from cadenza.packager.jit.reader import JitSource, probe_source
from cadenza.packager.jit.timing import (
    encoder_setup,
    media_ticks,
    resampled_ticks,
    segment_timeline,
)
from cadenza.packager.publish import render_manifests
from cadenza.packager.segmenter import CODECS_STRING, RungPlan
from cadenza.packager.track import plan_rungs

__all__ = [
    "JitSource",
    "plan_presentation",
    "probe_source",
    "rung_plan",
    "track_config",
    "track_files",
]

# STREAMINFO (RFC 9639 8.2): bytes 4-9 are the minimum and maximum frame sizes, 13-17
# hold the total sample count's 36 bits (after rate, channels and bit depth), 18-33 MD5.
_STREAMINFO_BYTES = 34


def flac_streaminfo(provisional: bytes, total_ticks: int) -> bytes:
    """The encoder's provisional STREAMINFO with the exact total sample count, and
    the frame sizes and MD5 that only a whole encode knows set to 0 ("unknown")."""
    info = bytearray(provisional[:_STREAMINFO_BYTES])
    info[4:10] = bytes(6)
    packed = int.from_bytes(info[10:18], "big")
    packed = (packed & ~((1 << 36) - 1)) | (total_ticks & ((1 << 36) - 1))
    info[10:18] = packed.to_bytes(8, "big")
    info[18:34] = bytes(16)
    return bytes(info)


def track_config(plan: RungPlan, rendition: Rendition) -> mp4.TrackConfig:
    """The init segment's configuration of a planned rendition."""
    setup = encoder_setup(plan)
    private = setup.extradata
    if plan.codec is Codec.FLAC:
        private = flac_streaminfo(private, rendition.duration_ticks)
    return mp4.TrackConfig(
        codec=plan.codec,
        sample_rate_hz=plan.sample_rate_hz,
        channels=plan.channels,
        codec_private=private,
        encoder_delay_ticks=rendition.encoder_delay_ticks,
        duration_ticks=rendition.duration_ticks,
        average_bitrate_bps=rendition.average_bitrate_bps,
        max_bitrate_bps=rendition.peak_bitrate_bps,
        bits_per_sample=plan.bits_per_sample or 16,
    )


def rung_plan(presentation: Presentation, rendition: Rendition) -> RungPlan:
    """The encoder settings a planned rendition was made with."""
    ticks = presentation.target_segment_duration_ticks
    segment_s = Fraction(ticks or 0, presentation.timescale)
    return RungPlan(
        rendition_id=rendition.id,
        codec=rendition.codec,
        bitrate_bps=rendition.target_bitrate_bps,
        sample_rate_hz=rendition.sample_rate_hz,
        channels=rendition.channels,
        bits_per_sample=rendition.bits_per_sample,
        segment_duration=segment_s,
        layout=SegmentLayout.SEPARATE,
        name_tag=rendition.name_tag,
    )


def _plan_rendition(source: JitSource, plan: RungPlan) -> Rendition:
    setup = encoder_setup(plan)
    rate = plan.sample_rate_hz
    input_ticks = resampled_ticks(source.total_ticks, source.probe.sample_rate_hz, rate)
    total = media_ticks(plan.codec, setup, input_ticks)
    segments: list[Segment] = []
    peak_bps = 0
    for number, (start, duration) in enumerate(
        segment_timeline(plan, setup.frame_ticks, total), start=1
    ):
        typical, bound = estimate_segment(
            plan, segment_durations(plan, setup.frame_ticks, duration)
        )
        segments.append(Segment(number, start, duration, typical))
        peak_bps = max(peak_bps, bitrate_bps(bound, duration, rate))
    average_bps = bitrate_bps(sum(s.size_bytes for s in segments), total, rate)
    rendition = Rendition(
        id=plan.rendition_id,
        codec=plan.codec,
        codecs=CODECS_STRING[plan.codec],
        sample_rate_hz=rate,
        channels=plan.channels,
        timescale=rate,
        average_bitrate_bps=average_bps,
        peak_bitrate_bps=peak_bps,
        encoder_delay_ticks=setup.priming_ticks,
        duration_ticks=input_ticks,
        init_size_bytes=0,
        segments=tuple(segments),
        target_bitrate_bps=plan.bitrate_bps,
        bits_per_sample=plan.bits_per_sample,
        layout=SegmentLayout.SEPARATE,
        name_tag=plan.name_tag,
    )
    track = track_config(plan, rendition)
    return replace(
        rendition,
        init_size_bytes=len(mp4.build_init_segment(track)),
        decoder_config=mp4.decoder_config(track),
    )


def plan_presentation(
    source: JitSource,
    *,
    track_id: str,
    ladder: Ladder,
    segment_duration: Fraction,
    fingerprint: Fingerprint | None,
    name_tag: str = "",
) -> tuple[Presentation, list[str]]:
    """``(presentation, warnings)``: what ``cadenza package`` would record for this
    source, ladder and segment duration, its measured fields estimated (module doc);
    the warnings are the ladder fitting's (rungs skipped or lowered)."""
    warnings: list[str] = []
    probe = source.probe
    plans = plan_rungs(ladder, probe, segment_duration, SegmentLayout.SEPARATE, warnings)
    renditions = tuple(_plan_rendition(source, replace(p, name_tag=name_tag)) for p in plans)
    presentation = Presentation(
        track_id=track_id,
        timescale=probe.sample_rate_hz,
        duration_ticks=source.total_ticks,
        renditions=renditions,
        loudness=None,
        source=SourceInfo(
            file_name=source.path.name,
            codec_name=probe.codec_name,
            sample_rate_hz=probe.sample_rate_hz,
            channels=probe.channels,
            bits_per_sample=probe.bits_per_sample,
        ),
        target_segment_duration_ticks=int(segment_duration * probe.sample_rate_hz),
        fingerprint=fingerprint,
        metadata=probe.tags,
    )
    return presentation, warnings


def track_files(presentation: Presentation) -> dict[str, bytes]:
    """Every manifest of the track, ``relative path -> bytes``, exactly as
    :func:`cadenza.packager.publish.write_manifests` writes them (one rendering)."""
    return {
        name: (text if isinstance(text, str) else "".join(text)).encode("utf-8")
        for name, text in render_manifests(presentation)
    }
