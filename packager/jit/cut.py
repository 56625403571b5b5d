"""Build any one init or media segment of a planned rendition alone, on request.

A media segment holds the batch encode's packets ``[first, last)`` (whole codec frames
on one grid from decode time 0).  :func:`build_segment` encodes only around them:

1. **Frame grid.**  A lossy encoder fed its input from sample ``k * frame`` onwards
   writes, as its packet ``j``, the frame the batch encoder writes as packet ``k + j``
   (its own priming falls before the grid, like the batch encoder's before zero).
   So the encode starts ``PREROLL_FRAMES`` frames before the segment, on the grid,
   and those packets are dropped: they bring the encoder's state (AAC: the MDCT
   overlap and the psychoacoustic model's lookahead and history; Opus: the CELT
   overlap, energy prediction and SILK state; RFC 7845 4.2 recommends 80 ms of
   pre-roll for Opus) to where the batch encoder's was.
2. **Post-roll.**  It runs ``POSTROLL_FRAMES`` frames past the segment before
   flushing, so the flush's zero padding touches none of the packets kept; the last
   segment runs to the true end and flushes as the batch encode does, so it ends on
   the same packet.
3. **Resampling.**  A resampled rung (a 44.1 or 96 kHz source into 48 kHz Opus)
   starts its resampler a whole rate period (:func:`cadenza.packager.jit.timing.rate_period`)
   and a margin before the window: its output is then sample for sample the batch
   resampler's (:mod:`cadenza.packager.jit.timing`), and the window is cut from it.
4. **Downmix.**  A stereo rung of a multichannel source gets the same BS.775 downmix
   (:class:`cadenza.packager.downmix.StereoDownmix`) sample for sample.
5. **FLAC.**  Its frames are independent and need no pre-roll: the segment's frames
   are encoded alone and renumbered (:mod:`cadenza.packager.flac_frames`), which
   makes the segment byte-identical to the batch packager's.

The kept packets are wrapped by :func:`cadenza.packager.mp4.build_media_segment` with
the batch segment's sequence number and ``tfdt``.  Blocking and CPU-bound; thread-safe
(every call opens its own decoder, resampler and encoder; PyAV releases the GIL inside
FFmpeg).  Clear media only.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import av.error
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from cadenza.manifests.model import Codec, Presentation, Rendition
from cadenza.packager import mp4
from cadenza.packager.downmix import StereoDownmix, is_downmix
from cadenza.packager.encode import LAYOUTS, open_codec
from cadenza.packager.errors import EncodeError
from cadenza.packager.flac_frames import renumber_frame
from cadenza.packager.jit.errors import SegmentNumberError, UnknownRenditionError
from cadenza.packager.jit.estimate import segment_durations
from cadenza.packager.jit.plan import rung_plan, track_config
from cadenza.packager.jit.reader import JitSource, read_window
from cadenza.packager.jit.timing import encoder_setup, rate_period
from cadenza.packager.publish import group_bitrates
from cadenza.packager.segmenter import RungPlan, fragment_track_config

# Frames encoded before a segment and dropped, and after it before flushing.  Measured
# (decoded joins against the batch encode's, tests/packager/test_jit_gapless.py): with
# no pre-roll an AAC join is ~40 dB worse than elsewhere, and Opus with 1 or 2 frames
# misses its joins by 15-25 dB now and then; from 8 frames (AAC 186 ms, Opus 160 ms,
# twice RFC 7845's 80 ms) the joins are as good as the batch encode's.  One frame of
# post-roll is short for AAC (the flush's padding reaches the last frame kept); 2 is not.
PREROLL_FRAMES: Final = {Codec.AAC: 8, Codec.OPUS: 8, Codec.FLAC: 0}
POSTROLL_FRAMES: Final = {Codec.AAC: 2, Codec.OPUS: 2, Codec.FLAC: 0}
# Source samples the resampler starts before its window and runs after it: more than
# its filter's reach (its output matches the batch resampler's after ~16 input samples).
RESAMPLER_MARGIN_TICKS: Final = 256
_SOURCE_BLOCK_TICKS: Final = 16384


def _rendition(presentation: Presentation, rendition_id: str) -> Rendition:
    try:
        return presentation.rendition(rendition_id)
    except KeyError:
        known = tuple(r.id for r in presentation.renditions)
        raise UnknownRenditionError(presentation.track_id, rendition_id, known) from None


def build_init(source: JitSource, presentation: Presentation, rendition_id: str) -> bytes:
    """The rendition's init segment: the batch encoder's codec configuration (FLAC:
    STREAMINFO with the exact sample count, MD5 unknown), the exact edit list, the
    estimated bitrates; the same bytes for every rung of a switching group, as
    :func:`cadenza.packager.publish.share_group_inits` makes them."""
    del source  # the plan holds everything the init segment says
    rendition = _rendition(presentation, rendition_id)
    init = mp4.build_init_segment(track_config(rung_plan(presentation, rendition), rendition))
    group = presentation.group_of(rendition_id)
    bitrates = None if group is None else group_bitrates(presentation, group)
    if bitrates is not None:
        init = mp4.with_group_bitrates(init, *bitrates)
    return init


def build_segment(
    source: JitSource, presentation: Presentation, rendition_id: str, number: int
) -> bytes:
    """Media segment ``number`` (from 1) of the rendition, encoded alone."""
    rendition = _rendition(presentation, rendition_id)
    if not 1 <= number <= len(rendition.segments):
        raise SegmentNumberError(
            presentation.track_id, rendition_id, number, len(rendition.segments)
        )
    plan = rung_plan(presentation, rendition)
    setup = encoder_setup(plan)
    frame_ticks, priming = setup.frame_ticks, setup.priming_ticks
    segment = rendition.segments[number - 1]
    durations = segment_durations(plan, frame_ticks, segment.duration_ticks)
    first = segment.start_ticks // frame_ticks
    last = first + len(durations)
    start = max(0, first - PREROLL_FRAMES[plan.codec])
    input_end = last * frame_ticks - priming + POSTROLL_FRAMES[plan.codec] * frame_ticks
    window = _rung_input(source, plan, rendition, start * frame_ticks, input_end)
    packets = _encode(plan, window)
    kept = packets[first - start : last - start]
    if len(kept) != len(durations):
        raise EncodeError(
            rendition_id,
            f"segment {number}: the encoder wrote {len(packets)} packets from frame {start}, "
            f"not the {last - start} the plan needs",
        )
    if plan.codec is Codec.FLAC:
        kept = [renumber_frame(frame, first + i) for i, frame in enumerate(kept)]
    track = fragment_track_config(plan)
    return mp4.build_media_segment(track, number, segment.start_ticks, kept, list(durations))


def _rung_input(
    source: JitSource, plan: RungPlan, rendition: Rendition, start: int, end: int
) -> AudioFrame:
    """The encoder's input samples ``[start, end)`` (clipped to the rung's length), in
    its sample format, as the batch encoder's resampler gives them."""
    end = min(end, rendition.duration_ticks)
    probe = source.probe
    source_rate = probe.sample_rate_hz
    period_in, period_out = rate_period(source_rate, plan.sample_rate_hz)
    margin = RESAMPLER_MARGIN_TICKS if period_in != period_out else 0
    source_start = max(0, (start * period_in // period_out - margin) // period_in * period_in)
    output_start = source_start // period_in * period_out
    source_end = min(source.total_ticks, -(-end * period_in // period_out) + margin)
    samples = read_window(source, source_start, source_end)
    layout = probe.layout_name
    if is_downmix(plan.channels, probe.channels):
        samples = StereoDownmix(probe.channel_names)(samples)
        layout = StereoDownmix.layout
    fmt = _encoder_format(plan)
    resampler = AudioResampler(format=fmt, layout=LAYOUTS[plan.channels], rate=plan.sample_rate_hz)
    outs: list[npt.NDArray[np.generic]] = []
    try:
        for at in range(0, samples.shape[1], _SOURCE_BLOCK_TICKS):
            frame = AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, at : at + _SOURCE_BLOCK_TICKS]),
                format="fltp",
                layout=layout,
            )
            frame.sample_rate = source_rate
            frame.time_base = Fraction(1, source_rate)
            frame.pts = source_start + at
            outs += [out.to_ndarray() for out in resampler.resample(frame)]
        outs += [out.to_ndarray() for out in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise EncodeError(plan.rendition_id, f"resampler failed: {exc}") from exc
    planar = fmt.endswith("p")
    width = 1 if planar else plan.channels  # packed formats interleave the channels
    data = np.concatenate(outs, axis=1) if outs else np.zeros((1, 0), np.float32)
    have = output_start + data.shape[1] // width
    if have < end:
        raise EncodeError(plan.rendition_id, f"resampler gave samples to {have}, not {end}")
    cut = data[:, (start - output_start) * width : (end - output_start) * width]
    return _frame(cut, fmt, plan, start)


def _encoder_format(plan: RungPlan) -> str:
    return {Codec.AAC: "fltp", Codec.OPUS: "flt"}.get(
        plan.codec, "s32" if plan.bits_per_sample == 24 else "s16"
    )


def _frame(data: npt.NDArray[np.generic], fmt: str, plan: RungPlan, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(data), format=fmt, layout=LAYOUTS[plan.channels]
    )
    frame.sample_rate = plan.sample_rate_hz
    frame.time_base = Fraction(1, plan.sample_rate_hz)
    frame.pts = pts
    return frame


def _encode(plan: RungPlan, frame: AudioFrame) -> list[bytes]:
    """Every packet the encoder writes for ``frame`` then a flush (FLAC's empty
    flush packet left out, as the batch encoder leaves it)."""
    ctx: AudioCodecContext = open_codec(plan)
    packets = []
    try:
        packets += ctx.encode(frame)
        packets += ctx.encode(None)
    except av.error.FFmpegError as exc:
        raise EncodeError(plan.rendition_id, f"encoder failed: {exc}") from exc
    data = [bytes(p) for p in packets]
    if plan.codec is Codec.FLAC:
        data = [d for d, p in zip(data, packets, strict=True) if p.duration]
    return data
