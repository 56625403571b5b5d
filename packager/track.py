"""Package one track: decode once, fan the frames out to every rung's encoder
and to the loudness meter, each on its own thread, then write the manifests
and move the finished folder into place.

PyAV releases the GIL inside FFmpeg's encoders and resamplers, so threads use
both cores without copying the decoded audio between processes (measured: two
AAC encoders on two threads take 0.58x the wall time of running them in turn).
"""

from __future__ import annotations

import ctypes
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Final

from cadenza.manifests.fingerprint import Fingerprint
from cadenza.manifests.ladder import Ladder
from cadenza.manifests.model import (
    Codec,
    Presentation,
    Rendition,
    SegmentLayout,
    SourceInfo,
)
from cadenza.packager.decode import Block, Decoder, SourceProbe, coalesce
from cadenza.packager.downmix import (
    DownmixMeter,
    StereoDownmix,
    is_downmix,
    with_downmix_loudness,
)
from cadenza.packager.encode import RungEncoder, RungPlan
from cadenza.packager.errors import LadderError, OutputError, PackagerError
from cadenza.packager.fingerprint import Verdict, decide_for_folder
from cadenza.packager.keys import EncryptionOptions, assign_keys, store_keys
from cadenza.packager.ladder import SourceShape, fit_ladder
from cadenza.packager.loudness import LoudnessMeter, channel_weights
from cadenza.packager.output import (
    commit_track,
    new_temp_dir,
    oserror_reason,
    track_id_for,
)
from cadenza.packager.progress import DecodeTracker
from cadenza.packager.publish import share_group_inits, write_manifests
from cadenza.packager.segmenter import DEFAULT_SEGMENT_DURATION as DEFAULT_SEGMENT_DURATION

QUEUE_BLOCKS: Final = 16  # per consumer: bounds memory while keeping both cores fed
# Samples per block handed to the consumers: 16384 is 0.37 s at 44.1 kHz; 5.1 float32
# blocks are 393 KB, so even full queues stay a few MiB.
BLOCK_TICKS: Final = 16384


@dataclass(frozen=True, slots=True)
class PackageOptions:
    ladder: Ladder
    segment_duration: Fraction = DEFAULT_SEGMENT_DURATION  # seconds
    single_file: bool = False
    force: bool = False
    # Damage that is otherwise a warning (a file cut short of its header's duration,
    # undecodable packets) fails the track (``--strict``).
    strict: bool = False
    # Set per track by the batch when a catalogue names the track; otherwise the
    # track id is the input's stem (packager.output.track_id_for).
    track_id: str | None = None
    # Set per track by the batch (packager.fingerprint): the source's fingerprint
    # (else hashed here), and once it has decided against a remote destination, the
    # file names' version tag (else decided here against the local track folder).
    fingerprint: Fingerprint | None = None
    name_tag: str | None = None
    # ``--encryption`` (packager.keys): None packages clear media.
    encryption: EncryptionOptions | None = None


@dataclass(slots=True)
class TrackResult:
    """What happened to one input; serialised into ``batch-report.json``."""

    input: str
    track_id: str
    status: str  # "packaged" | "skipped" | "failed"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    duration_s: float | None = None
    output: str | None = None
    reason: str | None = None  # why packaged again, or skipped (packager.fingerprint)

    def to_dict(self) -> dict[str, object]:
        return {
            "input": self.input,
            "track_id": self.track_id,
            "status": self.status,
            "error": self.error,
            "warnings": list(self.warnings),
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "duration_s": self.duration_s,
            "output": self.output,
            "reason": self.reason,
        }


def plan_rungs(
    ladder: Ladder,
    probe: SourceProbe,
    segment_duration: Fraction,
    layout: SegmentLayout,
    warnings: list[str],
) -> list[RungPlan]:
    """Fit the ladder to the source (:func:`cadenza.packager.ladder.fit_ladder`: 5.1
    rungs scaled and stereo downmixes added, nothing above the source's rate or
    bitrate).  A rung the source cannot fill is skipped, or lowered, with a warning
    rather than failing the track; a ladder left empty is an error."""
    shape = SourceShape(probe.sample_rate_hz, probe.channels, probe.lossy_bitrate_bps)
    fitted, notes = fit_ladder(ladder, shape)
    warnings += notes
    plans = []
    for rung in fitted:
        bits = None
        if rung.codec is Codec.FLAC:
            bits = 24 if (probe.bits_per_sample or 16) > 16 else 16
        plans.append(
            RungPlan(
                rendition_id=rung.rendition_id,
                codec=rung.codec,
                bitrate_bps=rung.bitrate_bps,
                sample_rate_hz=rung.sample_rate_hz,
                channels=rung.channels,
                bits_per_sample=bits,
                segment_duration=segment_duration,
                layout=layout,
            )
        )
    if not plans:
        raise LadderError(ladder.name, f"no rung fits this source; {'; '.join(warnings)}")
    return plans


class Consumer(threading.Thread):
    """Runs ``consume`` on every queued frame, then on ``None`` to finish.

    After a failure it keeps draining its queue so the decoder never blocks.
    """

    def __init__(self, name: str, consume: Callable[[Block | None], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.queue: queue.Queue[Block | None] = queue.Queue(QUEUE_BLOCKS)
        self._consume = consume
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if self.error is None:
                try:
                    self._consume(item)
                except BaseException as exc:  # re-raised on the caller's thread
                    self.error = exc
            if item is None:
                return


class _MeterSink:
    """Measures every block; the result is read once the encoders are gone."""

    def __init__(self, probe: SourceProbe) -> None:
        self.meter = LoudnessMeter(probe.sample_rate_hz, channel_weights(probe.channel_names))

    def __call__(self, block: Block | None) -> None:
        if block is not None:
            self.meter.add(block)


class _EncoderSink:
    def __init__(self, encoder: RungEncoder, downmix: StereoDownmix | None = None) -> None:
        self.encoder = encoder
        self.downmix = downmix  # a stereo rung of a multichannel source
        self.rendition: Rendition | None = None

    def __call__(self, block: Block | None) -> None:
        if block is None:
            self.rendition = self.encoder.finish()
        else:
            self.encoder.feed(block if self.downmix is None else self.downmix(block))


def _encoder_sink(plan: RungPlan, probe: SourceProbe, work_dir: Path) -> _EncoderSink:
    """A rung's encoder; a stereo rung of a multichannel source gets the BS.775
    downmix (cadenza.packager.downmix) before it."""
    downmix = StereoDownmix(probe.channel_names) if plan.channels == 2 < probe.channels else None
    encoder = RungEncoder(
        plan,
        work_dir / plan.rendition_id,
        source_rate_hz=probe.sample_rate_hz,
        source_layout=probe.layout_name if downmix is None else downmix.layout,
    )
    return _EncoderSink(encoder, downmix)


def _release_free_heap() -> None:
    """Hand the pages of freed heap memory back to the system (glibc's ``malloc_trim``;
    nothing elsewhere). glibc returns a thread arena's free memory only from the top of
    its heap, so what the encoder threads freed stays resident until then."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)


def _encode_all(
    decoder: Decoder, plans: list[RungPlan], work_dir: Path, tracker: DecodeTracker | None = None
) -> tuple[tuple[Rendition, ...], LoudnessMeter]:
    probe = decoder.probe
    meter = _MeterSink(probe)
    sinks = [_encoder_sink(plan, probe, work_dir) for plan in plans]
    consumers = [Consumer("loudness", meter)]
    downmix_meter = (
        DownmixMeter(probe.channel_names, probe.sample_rate_hz)
        if any(is_downmix(plan.channels, probe.channels) for plan in plans)
        else None
    )
    if downmix_meter is not None:  # the stereo downmix rungs' own loudness, same pass
        consumers.append(Consumer("downmix loudness", downmix_meter))
    consumers += [Consumer(s.encoder.plan.rendition_id, s) for s in sinks]
    for consumer in consumers:
        consumer.start()
    try:
        # One planar float32 copy per block, read by every consumer.
        for block in coalesce(decoder.frames(), BLOCK_TICKS):
            for consumer in consumers:
                consumer.queue.put(block)
            if tracker is not None:
                tracker.advance(decoder.report.decoded_ticks)
            if any(c.error is not None for c in consumers):
                break
    finally:
        for consumer in consumers:
            consumer.queue.put(None)
        for consumer in consumers:
            consumer.join()
        for sink in sinks:
            sink.encoder.abort()
    for consumer in consumers:
        if consumer.error is not None:
            raise consumer.error
    renditions = tuple(s.rendition for s in sinks if s.rendition is not None)
    assert len(renditions) == len(sinks)
    if downmix_meter is not None:
        loudness = downmix_meter.meter.result()
        renditions = with_downmix_loudness(renditions, probe.channels, loudness)
    return renditions, meter.meter


def package_track(source: Path, out_root: Path, options: PackageOptions) -> TrackResult:
    """Package one input into ``out_root/<track_id>/``; errors come back in the result."""
    track_id = options.track_id or track_id_for(source)
    result = TrackResult(input=str(source), track_id=track_id, status="failed")
    final_dir = out_root / track_id
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    try:
        decision = decide_for_folder(source, final_dir, options)
    except PackagerError as exc:
        result.error = str(exc) if str(source) in str(exc) else f"{source}: {exc}"
        return result
    result.reason = decision.reason
    if decision.verdict is Verdict.SKIP:
        result.status = "skipped"
        result.output = str(final_dir)
        return result
    if decision.verdict is Verdict.COLLISION:
        result.error = f"{source}: {decision.collision_error(track_id)}"
        return result
    work_dir: Path | None = None
    try:
        with Decoder(source, strict=options.strict) as decoder:
            layout = SegmentLayout.SINGLE if options.single_file else SegmentLayout.SEPARATE
            plans = plan_rungs(
                options.ladder, decoder.probe, options.segment_duration, layout, result.warnings
            )
            plans = [replace(plan, name_tag=decision.name_tag) for plan in plans]
            keys: dict[str, bytes] = {}
            if options.encryption is not None:
                plans, keys = assign_keys(plans, options.encryption)
            work_dir = new_temp_dir(out_root, track_id)
            tracker = DecodeTracker.start(track_id, decoder.probe)
            renditions, meter = _encode_all(decoder, plans, work_dir, tracker)
            # The encoders are gone. Their freed memory goes back to the system before
            # the end of the track allocates anew: gating every 400 ms block of a
            # 3-hour track takes a few MiB, and would otherwise add to the peak.
            _release_free_heap()
            loudness = meter.result()
            probe = decoder.probe
            presentation = Presentation(
                track_id=track_id,
                timescale=probe.sample_rate_hz,
                duration_ticks=decoder.report.decoded_ticks,
                renditions=renditions,
                loudness=loudness,
                source=SourceInfo(
                    file_name=source.name,
                    codec_name=probe.codec_name,
                    sample_rate_hz=probe.sample_rate_hz,
                    channels=probe.channels,
                    bits_per_sample=probe.bits_per_sample,
                ),
                target_segment_duration_ticks=int(options.segment_duration * probe.sample_rate_hz),
                fingerprint=decision.fingerprint,
                metadata=probe.tags,
            )
            result.warnings += decoder.report.warnings
        share_group_inits(work_dir, presentation)
        write_manifests(work_dir, presentation)
        if options.encryption is not None:  # the keys are stored before the track shows
            store_keys(options.encryption, keys)
        commit_track(work_dir, final_dir)
        work_dir = None
        result.status = "packaged"
        result.output = str(final_dir)
        result.duration_s = presentation.duration_ticks / presentation.timescale
    except PackagerError as exc:
        # Every error in a batch report names its file, even an encoder's.
        result.error = str(exc) if str(source) in str(exc) else f"{source}: {exc}"
    except OSError as exc:
        result.error = str(OutputError(exc.filename or out_root, oserror_reason(exc)))
    finally:
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
        result.wall_s = time.perf_counter() - started_wall
        # Process CPU: exact when, as in the batch runner, a process packages one track at a time.
        result.cpu_s = time.process_time() - started_cpu
    return result
