"""Segment sizes and bitrates of a rung not yet encoded: the measured fields of the
batch packager's presentation, estimated.

The batch packager measures each segment's size, the rendition's average bitrate
(all media bytes over the media duration) and its peak (the highest segment's
bitrate), which become HLS ``BANDWIDTH``/``AVERAGE-BANDWIDTH`` (RFC 8216 4.3.4.2), the
MPD's ``@bandwidth`` (ISO/IEC 23009-1 5.3.5.2) and the init segment's ``btrt``/``esds``
bitrate fields.  Just-in-time packaging states them before any segment exists:

- a segment's boxes (``styp``, ``moof``, the ``mdat`` header) depend only on its frame
  count, so their size is exact (built with empty samples);
- its payload is the rung's target bitrate over its duration (lossy), or the PCM size
  times :data:`FLAC_TYPICAL_RATIO` (FLAC);
- the peak must stay a safe upper bound of what the real segments reach, so each
  segment's payload is multiplied by a headroom measured on hard inputs (white noise,
  full-scale sweeps, clicks, silence, music; mono, stereo, 5.1; 1, 2 and 4 s segments:
  :func:`peak_headroom`), capped by the most the codec can put in that many frames.
  FLAC's peak is its verbatim bound: FFmpeg's encoder never codes a subframe larger
  than its samples verbatim, so a frame is at most its PCM bytes (plus one bit a
  sample for a stereo side channel, RFC 9639 4.2) and its headers.
"""

from __future__ import annotations

import functools
from typing import Final

from cadenza.manifests.model import Codec
from cadenza.packager import mp4
from cadenza.packager.segmenter import RungPlan, fragment_track_config

# A typical FLAC compression ratio for music, for the average only (the peak is the
# verbatim bound).
FLAC_TYPICAL_RATIO: Final = 0.6
# FLAC frame overhead beyond the samples: the frame header (at most 16 bytes), one
# subframe header byte per channel (plus a wasted-bits byte) and the CRC-16.
_FLAC_FRAME_OVERHEAD_BYTES: Final = 16 + 2
_FLAC_SUBFRAME_OVERHEAD_BYTES: Final = 2
# The most one coded frame can hold: AAC, 6144 bits per channel (ISO/IEC 14496-3
# 4.5.3.2); Opus, 1275 bytes per stream (RFC 6716 3.2.1), a stream per channel at most.
_AAC_FRAME_MAX_BYTES_PER_CHANNEL: Final = 768
_OPUS_PACKET_MAX_BYTES_PER_CHANNEL: Final = 1275 + 8
# Peak headroom: how far above the target bitrate a segment's payload may reach.
# Measured maxima (payload bitrate over target, every segment, 1, 2 and 4 s segments,
# last segments of 1 to 3 frames included) on white noise, full-scale sweeps, gated
# noise with clicks, silence and music, mono, stereo and 5.1 (docs/packaging.md):
# - AAC (FFmpeg's encoder), 2 and 6 channels: at most 1.28 (1.14 beyond 3 frames).
#   Mono below 128 kb/s overshoots on clicks, to about 200 kb/s whatever the target
#   (5.6x at 32 kb/s, 3.2x at 64 kb/s): a mono rung's peak is at least AAC_MONO_FLOOR_BPS.
# - Opus (libopus VBR) from 64 kb/s and 16 kb/s a channel: at most 1.99.  Below, it
#   keeps a floor per stream: 3.1x at 24 kb/s (mono, stereo), 9.9x at 60 kb/s for 5.1.
AAC_HEADROOM: Final = 1.35
AAC_MONO_FLOOR_BPS: Final = 240_000
OPUS_HEADROOM: Final = 2.2
OPUS_LOW_HEADROOM: Final = 4.0  # below 64 kb/s, from 12 kb/s a channel
OPUS_STARVED_HEADROOM: Final = 12.0  # below 12 kb/s a channel


def peak_headroom(plan: RungPlan) -> float:
    """How far above the target bitrate a segment's payload may reach (measured)."""
    bps = plan.bitrate_bps or 0
    if plan.codec is Codec.AAC:
        if plan.channels == 1 and bps:
            return max(AAC_HEADROOM, AAC_MONO_FLOOR_BPS / bps)
        return AAC_HEADROOM
    per_channel_bps = bps / plan.channels
    if bps >= 64_000 and per_channel_bps >= 16_000:
        return OPUS_HEADROOM
    return OPUS_LOW_HEADROOM if per_channel_bps >= 12_000 else OPUS_STARVED_HEADROOM


@functools.lru_cache(maxsize=1024)
def _box_bytes(plan: RungPlan, durations: tuple[int, ...]) -> int:
    track = fragment_track_config(plan)
    empty = [b""] * len(durations)
    return len(mp4.build_media_segment(track, 1, 0, empty, list(durations)))


def segment_durations(plan: RungPlan, frame_ticks: int, duration_ticks: int) -> tuple[int, ...]:
    """The durations of the frames (CMAF samples) of a segment of ``duration_ticks``:
    whole frames, and for FLAC a shorter last block."""
    if plan.codec is not Codec.FLAC:
        return (frame_ticks,) * (duration_ticks // frame_ticks)
    full, rest = divmod(duration_ticks, frame_ticks)
    return (frame_ticks,) * full + ((rest,) if rest else ())


def _max_payload_bytes(plan: RungPlan, durations: tuple[int, ...]) -> int:
    if plan.codec is Codec.AAC:
        return _AAC_FRAME_MAX_BYTES_PER_CHANNEL * plan.channels * len(durations)
    if plan.codec is Codec.OPUS:
        return _OPUS_PACKET_MAX_BYTES_PER_CHANNEL * plan.channels * len(durations)
    # Stereo decorrelation codes a side channel with one bit more than the samples.
    bits = plan.channels * (plan.bits_per_sample or 16) + (1 if plan.channels == 2 else 0)
    samples = -(-sum(durations) * bits // 8)
    per_frame = _FLAC_FRAME_OVERHEAD_BYTES + _FLAC_SUBFRAME_OVERHEAD_BYTES * plan.channels
    return samples + per_frame * len(durations)


def estimate_segment(plan: RungPlan, durations: tuple[int, ...]) -> tuple[int, int]:
    """(typical size, upper bound of the size) in bytes of a segment of these frames."""
    boxes = _box_bytes(plan, durations)
    ticks = sum(durations)
    bound = _max_payload_bytes(plan, durations)
    if plan.bitrate_bps is None:  # FLAC
        pcm = ticks * plan.channels * (plan.bits_per_sample or 16) // 8
        return boxes + round(pcm * FLAC_TYPICAL_RATIO), boxes + bound
    payload = plan.bitrate_bps * ticks / plan.sample_rate_hz / 8
    peak = min(payload * peak_headroom(plan), bound)
    return boxes + round(payload), boxes + int(peak) + 1


def bitrate_bps(size_bytes: int, duration_ticks: int, rate_hz: int) -> int:
    """A size over a duration, rounded as the batch segmenter rounds it."""
    return round(size_bytes * 8 * rate_hz / duration_ticks)
