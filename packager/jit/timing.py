"""The timing rules of the batch encode, as functions of the source's length alone.

The batch packager (:mod:`cadenza.packager.encode`, :mod:`cadenza.packager.segmenter`)
learns a rung's timing by encoding it: how many samples the resampler gives, how
many packets the encoder writes, its priming, and where the segments fall.  Each is
deterministic, and just-in-time packaging states it before encoding anything:

- **Resampler output** (PyAV's ``AudioResampler``, FFmpeg's swresample): the count
  depends on the input length only, not on the content nor on how the input is cut
  into frames, and is shift-invariant by one rate period: with ``g = gcd(in, out)``,
  ``P = in / g`` input samples give exactly ``Q = out / g`` more output samples, and
  a resampler started ``k * P`` samples into the input gives, after a warm-up of a
  few dozen samples, the very same samples as one started at zero, from output
  ``k * Q`` on (measured bit for bit, 8 to 192 kHz).  So :func:`resampled_ticks`
  runs the real resampler once on a few thousand samples of silence of the same
  length modulo ``P``, and adds whole periods.
- **Encoder frames and priming**: read from the real encoder, opened once per
  configuration (:func:`encoder_setup`): FFmpeg's AAC writes 1024-sample frames and
  primes 1024 samples (its first packet starts at -1024); libopus writes 20 ms
  (960-sample) frames and primes its OpusHead pre-skip (312 samples); FFmpeg's FLAC
  uses a block size chosen from the rate (2304 at 22.05 kHz, 4608 at 44.1/48 kHz,
  8192 at 88.2/96 kHz, 16384 at 176.4/192 kHz) and no priming.
- **Packets**: a lossy encoder flushed after ``n`` input samples writes exactly
  ``ceil((n + priming) / frame)`` packets, each a whole frame (the edit list trims
  the padding); FLAC writes ``n`` samples in full blocks and one shorter last block.
- **Segments** (:class:`cadenza.packager.segmenter.Segmenter`): cut every
  ``segment_frames(plan, frame)`` frames from decode time 0; the last holds the rest.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from cadenza.manifests.model import Codec, SegmentLayout
from cadenza.packager.encode import LAYOUTS, encoder_delay_ticks, open_codec
from cadenza.packager.errors import EncodeError
from cadenza.packager.segmenter import RungPlan, segment_frames

# The resampler's count is measured on at least this many input samples: below a few
# hundred it swallows short inputs whole (its filter's delay), and the rule holds above.
_COUNT_WARM_TICKS: Final = 8192
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class EncoderSetup:
    """What an encoder configuration implies for timing and for the init segment."""

    frame_ticks: int  # samples per coded frame (FLAC: per full block)
    priming_ticks: int  # encoder delay: the edit list's media_time
    extradata: bytes  # AAC AudioSpecificConfig, OpusHead, or FLAC STREAMINFO (provisional)


@functools.lru_cache(maxsize=64)
def _setup(
    codec: Codec, rate_hz: int, channels: int, bits: int | None, bitrate_bps: int | None
) -> EncoderSetup:
    plan = RungPlan(
        "probe", codec, bitrate_bps, rate_hz, channels, bits, Fraction(1), SegmentLayout.SEPARATE
    )
    ctx = open_codec(plan)
    frame_ticks = ctx.frame_size or 4096
    extradata = bytes(ctx.extradata or b"")
    first_pts: int | None = None
    if codec is not Codec.FLAC:  # the priming shows as the first packet's negative pts
        planar = ctx.format.is_planar
        shape = (channels, frame_ticks) if planar else (1, frame_ticks * channels)
        silence = np.zeros(shape, dtype=np.float32)
        frame = AudioFrame.from_ndarray(silence, format=ctx.format.name, layout=LAYOUTS[channels])
        frame.sample_rate = rate_hz
        frame.pts = 0
        frame.time_base = Fraction(1, rate_hz)
        try:
            packets = [*ctx.encode(frame), *ctx.encode(None)]
        except av.error.FFmpegError as exc:
            raise EncodeError(plan.rendition_id, f"encoder failed: {exc}") from exc
        first_pts = packets[0].pts if packets else None
    return EncoderSetup(frame_ticks, encoder_delay_ticks(codec, extradata, first_pts), extradata)


def encoder_setup(plan: RungPlan) -> EncoderSetup:
    """The frame size, priming and codec configuration of ``plan``'s encoder."""
    with _lock:  # opens an encoder once per configuration, not once per caller
        return _setup(
            plan.codec, plan.sample_rate_hz, plan.channels, plan.bits_per_sample, plan.bitrate_bps
        )


def rate_period(in_rate_hz: int, out_rate_hz: int) -> tuple[int, int]:
    """``(P, Q)``: every ``P`` input samples the resampler gives ``Q`` output samples."""
    common = math.gcd(in_rate_hz, out_rate_hz)
    return in_rate_hz // common, out_rate_hz // common


@functools.lru_cache(maxsize=4096)
def _measured_count(ticks: int, in_rate_hz: int, out_rate_hz: int) -> int:
    resampler = AudioResampler(format="fltp", layout="mono", rate=out_rate_hz)
    frame = AudioFrame.from_ndarray(
        np.zeros((1, ticks), dtype=np.float32), format="fltp", layout="mono"
    )
    frame.sample_rate = in_rate_hz
    frame.pts = 0
    frame.time_base = Fraction(1, in_rate_hz)
    outs = [*resampler.resample(frame), *resampler.resample(None)]
    return sum(out.samples for out in outs)


def resampled_ticks(ticks: int, in_rate_hz: int, out_rate_hz: int) -> int:
    """How many samples the batch encoder's resampler gives for ``ticks`` input samples."""
    if in_rate_hz == out_rate_hz:
        return ticks
    period_in, period_out = rate_period(in_rate_hz, out_rate_hz)
    if ticks <= _COUNT_WARM_TICKS + period_in:
        with _lock:
            return _measured_count(ticks, in_rate_hz, out_rate_hz)
    periods = (ticks - _COUNT_WARM_TICKS) // period_in
    rest = ticks - periods * period_in
    with _lock:
        return _measured_count(rest, in_rate_hz, out_rate_hz) + periods * period_out


def media_ticks(codec: Codec, setup: EncoderSetup, input_ticks: int) -> int:
    """The summed duration of every packet the encoder writes for ``input_ticks`` samples:
    lossy, whole frames covering priming and input; FLAC, the input itself."""
    if codec is Codec.FLAC:
        return input_ticks
    frames = -(-(input_ticks + setup.priming_ticks) // setup.frame_ticks)
    return frames * setup.frame_ticks


def segment_timeline(plan: RungPlan, frame_ticks: int, total_ticks: int) -> list[tuple[int, int]]:
    """``(start, duration)`` of every segment, as the batch segmenter cuts them."""
    step = segment_frames(plan, frame_ticks) * frame_ticks
    full, rest = divmod(total_ticks, step)
    timeline = [(i * step, step) for i in range(full)]
    if rest:
        timeline.append((full * step, rest))
    return timeline
