"""The live ingest loop: read the input, feed every rung's encoder thread, and
publish each grid part once every rung has it.

The clock is injected (seconds since the epoch, as a ``Callable[[], float]``) so the
timeline, the stall handling and the start timeout run without sleeping in tests.
An input that delivers nothing for a part's duration is a stall: the rungs are fed
silence up to the next part boundary past the wall clock, so their timelines keep
pace and stay continuous, and the parts made wholly of that silence are published
marked as gaps (their files hold the silence).  A format change is absorbed by the
input's normalisation; the next part boundary gets new init segments and a
discontinuity.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import numpy as np
from av.audio.layout import AudioLayout

from cadenza.manifests.ladder import Ladder
from cadenza.manifests.live import LivePresentation
from cadenza.manifests.model import SegmentLayout
from cadenza.packager.decode import Block, SourceProbe
from cadenza.packager.downmix import StereoDownmix
from cadenza.packager.errors import InputError, LadderError
from cadenza.packager.live.anchor import StartAnchor
from cadenza.packager.live.grid import (
    DEFAULT_PART_DURATION,
    DEFAULT_SEGMENT_DURATION,
    DEFAULT_WINDOW_S,
    LIVE_RATE_HZ,
    LiveGrid,
    plan_grid,
)
from cadenza.packager.live.publisher import Publisher, RenditionInfo
from cadenza.packager.live.rungs import EncodedPart, LiveRung
from cadenza.packager.live.sink import LiveSink, open_sink
from cadenza.packager.live.sink_s3 import S3Output
from cadenza.packager.live.source import EndOfInput, FormatChange, LiveSource, Reconnecting
from cadenza.packager.track import Consumer, plan_rungs

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S: Final = 10.0
START_POLL_S: Final = 0.5
RECONNECT_LOG_EVERY: Final = 10


@dataclass(frozen=True, slots=True)
class LiveOptions:
    ladder: Ladder
    part_duration: Fraction = DEFAULT_PART_DURATION
    segment_duration: Fraction = DEFAULT_SEGMENT_DURATION
    window_s: float = DEFAULT_WINDOW_S
    max_duration_s: float | None = None
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    # Treat a read that waits longer than a part as a stall (a live source, or a file
    # paced in real time); off for a file read as fast as it decodes.
    detect_stalls: bool = False


def _first_block(
    source: LiveSource, name: str, clock: Callable[[], float], timeout_s: float
) -> tuple[Block, float]:
    """The input's first block of audio, and when it arrived."""
    started = clock()
    tried = ""  # why the last attempt failed
    while True:
        item = source.read(min(START_POLL_S, timeout_s))
        if isinstance(item, EndOfInput):
            raise InputError(name, f"no audio: {item.reason}")
        if isinstance(item, np.ndarray):
            return item, clock()
        if isinstance(item, Reconnecting):
            _log_reconnect(name, item, 0, tried)
            tried = item.reason
        if clock() - started >= timeout_s:
            why = f"; the last attempt: {tried}" if tried else ""
            raise InputError(
                name, f"no audio arrived within {timeout_s:g} s (--start-timeout){why}"
            )


def _log_reconnect(name: str, item: Reconnecting, position_ticks: int, last_reason: str) -> None:
    """A warning for the first attempt, a new reason, and every tenth attempt; the
    others are debug (a server down for minutes is not a warning a second)."""
    loud = item.attempt % RECONNECT_LOG_EVERY == 1 or item.reason != last_reason
    level = logging.WARNING if loud else logging.DEBUG
    at_s = position_ticks / LIVE_RATE_HZ
    message = "%s: %s; reconnecting (attempt %d, at %.2f s)"
    log.log(level, message, name, item.reason, item.attempt, at_s)


class _Ingest:
    def __init__(
        self,
        source: LiveSource,
        sink: LiveSink,
        track_id: str,
        options: LiveOptions,
        clock: Callable[[], float],
        warnings: list[str],
    ) -> None:
        self.source = source
        self.options = options
        self.clock = clock
        probe = _ingest_probe(track_id, source.layout)
        self.channels = probe.channels
        plans = plan_rungs(
            options.ladder, probe, options.segment_duration, SegmentLayout.SEPARATE, warnings
        )
        for plan in plans:
            if plan.sample_rate_hz != LIVE_RATE_HZ:
                raise LadderError(plan.rendition_id, f"live encodes at {LIVE_RATE_HZ} Hz only")
        self.grid: LiveGrid = plan_grid(
            (p.codec for p in plans), options.part_duration, options.segment_duration
        )
        # Rungs put their parts here; one thread publishes them as they come.
        self.parts_out: queue.Queue[EncodedPart | None] = queue.Queue()
        self.publishing = threading.Thread(target=self.publish_ready, name="live publish")
        self.publish_error: BaseException | None = None
        self.rungs = [
            LiveRung(
                plan,
                self.grid,
                self.parts_out,
                source_layout=probe.layout_name,
                source_channels=probe.channels,
                downmix=StereoDownmix(probe.channel_names)
                if plan.channels == 2 < probe.channels
                else None,
            )
            for plan in plans
        ]
        self.consumers = [Consumer(r.plan.rendition_id, r) for r in self.rungs]
        self.publisher = Publisher(
            sink,
            track_id,
            self.grid,
            [
                RenditionInfo(
                    id=r.plan.rendition_id,
                    codec=r.plan.codec.value,
                    codecs=r.codecs,
                    channels=r.plan.channels,
                    bitrate_bps=r.plan.bitrate_bps or 0,
                    frame_ticks=r.frame_ticks,
                )
                for r in self.rungs
            ],
            clock=clock,
            window_s=options.window_s,
        )
        self.anchor = StartAnchor(
            self.publisher, clock, self.grid.part_ticks, paced=options.detect_stalls
        )
        self.position = 0  # ticks fed to the rungs
        self.fills: list[tuple[int, int]] = []  # silence fed for stalls, [start, end)
        self.change_at: list[tuple[int, str]] = []  # format changes: (part index, reason)
        self.pending: dict[int, dict[str, EncodedPart]] = {}
        # (ticks fed, wall clock) after each feed: how long after its last sample
        # arrived each part was published (the ingest-to-part delay).
        self.arrivals: deque[tuple[int, float]] = deque()
        self.part_delays_s: list[float] = []
        self.next_part = 0
        self.max_ticks = (
            None if options.max_duration_s is None else round(options.max_duration_s * LIVE_RATE_HZ)
        )

    def inits(self) -> dict[str, bytes]:
        return {r.plan.rendition_id: r.init_segment() for r in self.rungs}

    # -- feeding -------------------------------------------------------------------
    def feed(self, block: Block, *, arrived_s: float | None = None, silence: bool = False) -> bool:
        """Hand ``block`` to every rung; False once --max-duration is reached.
        ``arrived_s``: when it arrived, when that was before now; ``silence``: a
        stall's fill, not input."""
        if self.max_ticks is not None:
            room = self.max_ticks - self.position
            if room <= 0:
                return False
            block = block[:, :room]
        for consumer in self.consumers:
            consumer.queue.put(block)
        self.position += block.shape[1]
        arrived = self.clock() if arrived_s is None else arrived_s
        self.arrivals.append((self.position, arrived))
        if not silence:  # a stall's fill runs up to a part past the clock by design
            self.anchor.note_arrival(arrived, self.position)
        self.check_errors()
        return self.max_ticks is None or self.position < self.max_ticks

    def fill_stall(self) -> bool:
        """Nothing came for a part: silence up to the part boundary past the wall clock
        (and no burst is running: tick 0's instant is settled)."""
        self.anchor.settle()
        wall = round((self.clock() - self.anchor.start_s) * LIVE_RATE_HZ)
        part = self.grid.part_ticks
        target = (max(self.position, wall) // part + 1) * part
        start = self.position
        if self.max_ticks is not None:
            target = min(target, self.max_ticks)
        silence: Block = np.zeros((self.channels, target - start), dtype=np.float32)
        silence.flags.writeable = False
        self.fills.append((start, target))
        return self.feed(silence, silence=True)

    def note_change(self, reason: str) -> None:
        part = self.grid.part_ticks
        boundary = -(-self.position // part)
        if self.change_at and self.change_at[-1][0] == boundary:  # one change, seen in steps
            reason = f"{self.change_at.pop()[1]}; {reason}"
        self.change_at.append((boundary, reason))

    def is_fill(self, index: int) -> bool:
        start = self.grid.part_start(index)
        end = start + self.grid.part_ticks
        return any(a <= start and end <= b for a, b in self.fills)

    # -- publishing ----------------------------------------------------------------
    def publish_ready(self) -> None:
        """On the publishing thread: take each finished part as it comes and publish,
        in order, every grid part all rungs have finished, until the end marker."""
        count = len(self.rungs)
        try:
            while (encoded := self.parts_out.get()) is not None:
                self.pending.setdefault(encoded.index, {})[encoded.rendition_id] = encoded
                while len(self.pending.get(self.next_part, {})) == count:
                    self.publish(self.next_part, self.pending.pop(self.next_part))
                    self.next_part += 1
        except BaseException as exc:  # re-raised on the ingest's thread
            self.publish_error = exc

    def publish(self, index: int, parts: dict[str, EncodedPart]) -> None:
        while self.change_at and self.change_at[0][0] <= index:
            _, reason = self.change_at.pop(0)
            self.publisher.begin_new_init(self.inits(), reason)
        self.publisher.add_part(index, parts, gap=self.is_fill(index))
        end = self.grid.part_start(index + 1)
        while self.arrivals and self.arrivals[0][0] < end:
            self.arrivals.popleft()
        if self.arrivals:
            self.part_delays_s.append(self.clock() - self.arrivals[0][1])

    def check_errors(self) -> None:
        for consumer in self.consumers:
            if consumer.error is not None:
                raise consumer.error
        if self.publish_error is not None:
            raise self.publish_error

    def start(self) -> None:
        self.publisher.write_inits(self.inits())
        for consumer in self.consumers:
            consumer.start()
        self.publishing.start()

    def _stop_threads(self) -> None:
        for consumer in self.consumers:
            consumer.queue.put(None)
        for consumer in self.consumers:
            consumer.join()
        self.parts_out.put(None)
        self.publishing.join()

    def finish(self) -> LivePresentation:
        """Flush the encoders, publish what is left, and mark the stream ended.  A
        trailing part only some rungs have holds nothing but their encoder's padding
        past the input's end, and is dropped."""
        self._stop_threads()
        self.check_errors()
        if self.part_delays_s:
            delays = sorted(self.part_delays_s)
            log.info(
                "ingest to part published: median %.1f ms, max %.1f ms over %d parts",
                1000 * delays[len(delays) // 2],
                1000 * delays[-1],
                len(delays),
            )
        self.publisher.end()
        self.publisher.finish()
        assert self.publisher.presentation is not None
        return self.publisher.presentation

    def abort(self) -> None:
        self._stop_threads()
        self.publisher.abort()


def _ingest_probe(name: str, layout: str) -> SourceProbe:
    """The source as the rungs see it: the ingest format (for fitting the ladder)."""
    audio_layout = AudioLayout(layout)
    return SourceProbe(
        path=Path(name),
        codec_name="live",
        sample_rate_hz=LIVE_RATE_HZ,
        channels=audio_layout.nb_channels,
        layout_name=audio_layout.name,
        channel_names=tuple(c.name for c in audio_layout.channels),
        bits_per_sample=None,
        declared_duration_ticks=None,
    )


def run_live(
    source: LiveSource,
    out_root: Path | S3Output,
    track_id: str,
    options: LiveOptions,
    *,
    clock: Callable[[], float],
    name: str = "input",
    warnings: list[str] | None = None,
) -> LivePresentation:
    """Package ``source`` live into ``out_root/track_id/`` until it ends (or
    ``max_duration_s`` of media); returns the final model (``ended=True``)."""
    notes = warnings if warnings is not None else []
    first, first_arrived_s = _first_block(source, name, clock, options.start_timeout_s)
    sink = open_sink(out_root, track_id)  # a local folder or an S3 prefix, prepared
    ingest = _Ingest(source, sink, track_id, options, clock, notes)
    ingest.start()
    part_s = ingest.grid.part_ticks / LIVE_RATE_HZ
    try:
        try:
            running = ingest.feed(first, arrived_s=first_arrived_s)
            lost_s: float | None = None  # when a reconnect began
            tried = ""  # why the last reconnect was needed
            while running:
                item = source.read(part_s if options.detect_stalls else None)
                if item is None:
                    running = ingest.fill_stall()
                elif isinstance(item, EndOfInput):
                    log.info("%s: %s", name, item.reason)
                    break
                elif isinstance(item, FormatChange):
                    ingest.note_change(item.reason)
                elif isinstance(item, Reconnecting):
                    _log_reconnect(name, item, ingest.position, tried)
                    lost_s, tried = clock() if lost_s is None else lost_s, item.reason
                else:
                    if lost_s is not None:
                        log.warning(
                            "%s: reconnected: audio again after %.1f s", name, clock() - lost_s
                        )
                        lost_s = None
                    running = ingest.feed(item)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (the command): end the stream
            log.warning("%s: interrupted; ending the stream", name)
        return ingest.finish()
    except BaseException:
        ingest.abort()
        raise
    finally:
        source.close()
