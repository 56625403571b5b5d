"""Publish the live track as parts arrive: part files, whole segments, ``live.json``
and the media playlists, in that order, each written whole to the track's sink (a
folder or an S3 prefix, :mod:`cadenza.packager.live.sink`) with a barrier between
the steps, so a reader never sees a name that is not there (the layout is
:mod:`cadenza.manifests.live`'s).

Segments are whole parts of the grid, closed early only by a format change (a
discontinuity).  A stall does not cut a segment: the silence the rungs encoded while
the input gave nothing is published like any part, so every segment number on the
grid has its files and a DASH player that numbers segments from the clock plays the
silence; those parts are marked ``gap`` (``GAP=YES``, RFC 8216bis 4.4.4.9), and a
segment made only of them is a gap segment (EXT-X-GAP, 4.4.4.7).  The DVR window
keeps the newest segments; older ones leave ``live.json`` first and their files go a
grace period later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cadenza.manifests.live import (
    LIVE_INIT_TEMPLATE,
    LIVE_SEGMENT_TEMPLATE,
    LIVE_STATE_NAME,
    LivePart,
    LivePresentation,
    LiveRendition,
    LiveSegment,
)
from cadenza.manifests.live_json import live_to_json
from cadenza.manifests.live_window import trim_window, window_start_number
from cadenza.manifests.lldash import render_live_mpd
from cadenza.manifests.llhls import render_live_master, render_live_media_playlist
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PLAYLIST_NAME
from cadenza.packager import mp4
from cadenza.packager.live.files import Reaper
from cadenza.packager.live.grid import LiveGrid
from cadenza.packager.live.rungs import EncodedPart
from cadenza.packager.live.sink import LiveSink

log = logging.getLogger(__name__)

TIME_URL = "/v1/time"  # the origin's UTCTiming endpoint (ISO/IEC 23009-1 5.8.4.11)


@dataclass(frozen=True, slots=True)
class RenditionInfo:
    id: str
    codec: str
    codecs: str
    channels: int
    bitrate_bps: int
    frame_ticks: int


@dataclass(slots=True)
class _OpenSegment:
    number: int
    start_ticks: int
    init: int
    gap: bool
    discontinuity: bool
    parts: dict[str, list[LivePart]] = field(default_factory=dict)
    data: dict[str, list[bytes]] = field(default_factory=dict)

    @property
    def part_count(self) -> int:
        return max((len(p) for p in self.parts.values()), default=0)


class Publisher:
    def __init__(
        self,
        sink: LiveSink,
        track_id: str,
        grid: LiveGrid,
        renditions: Sequence[RenditionInfo],
        *,
        clock: Callable[[], float],
        window_s: float,
    ) -> None:
        self.sink = sink
        self._track_id = track_id
        self._grid = grid
        self._infos = tuple(renditions)
        self._clock = clock
        self._window_us = round(window_s * 1_000_000)
        # Tick 0's wall-clock instant: moved earlier by anchor() until the first
        # live.json is written, then fixed (a lock: the ingest's thread anchors, the
        # publishing thread publishes).
        self.availability_start_ms = round(clock() * 1000)
        self._anchor_lock = threading.Lock()
        self._anchored = False
        # Each rendition's complete segments in the window, with what left it
        # (cadenza.manifests.live_window.trim_window).
        self._windows = {info.id: self._empty(info) for info in self._infos}
        self._open: _OpenSegment | None = None
        self._next_number = 1
        self._init = 0
        self._pending_discontinuity = False
        self._ended = False
        self._manifests_due = True  # master.m3u8 and manifest.mpd, with the first part
        self._reaper = Reaper(clock, grace_s=grid.segment_us / 1_000_000, remove=sink.remove)
        self.presentation: LivePresentation | None = None

    # -- inits and format changes --------------------------------------------------
    def write_inits(self, inits: Mapping[str, bytes]) -> None:
        """Init segment ``n`` of every rendition (the first, or after a format change)."""
        for rid, data in inits.items():
            self.sink.publish(f"{rid}/{LIVE_INIT_TEMPLATE.format(init=self._init)}", data)
        self.sink.barrier()

    def begin_new_init(self, inits: Mapping[str, bytes], reason: str) -> None:
        """A format change: the current segment ends, the next one needs init n+1 and
        starts with a discontinuity (EXT-X-DISCONTINUITY; a new DASH Period)."""
        log.warning("%s: %s: new init segments, discontinuity", self._track_id, reason)
        self._close_open()
        self._init += 1
        self._pending_discontinuity = True
        self._manifests_due = True  # rewritten with the next part (a new Period)
        self.write_inits(inits)

    # -- parts ---------------------------------------------------------------------
    def add_part(self, index: int, parts: Mapping[str, EncodedPart], *, gap: bool = False) -> None:
        """Grid part ``index``: every rendition's part; ``gap``: made of the silence
        fed while the input stalled."""
        seg = self._open
        if seg is not None and (
            self._pending_discontinuity or seg.part_count >= self._grid.parts_per_segment
        ):
            self._close_open()
            seg = None
        if seg is None:
            seg = _OpenSegment(
                number=self._next_number,
                start_ticks=self._grid.part_start(index),
                init=self._init,
                gap=gap,
                discontinuity=self._pending_discontinuity,
            )
            self._next_number += 1
            self._pending_discontinuity = False
            self._open = seg
        seg.gap = seg.gap and gap  # a gap segment: every part so far a gap
        for info in self._infos:
            part_list = seg.parts.setdefault(info.id, [])
            chunks = seg.data.setdefault(info.id, [])
            encoded = parts[info.id]
            data = encoded.data if part_list else mp4.build_styp() + encoded.data
            part = LivePart(len(part_list), encoded.duration_ticks, len(data), gap=gap)
            self.sink.publish(f"{info.id}/{part.name(seg.number)}", data)
            part_list.append(part)
            chunks.append(data)
        if seg.part_count >= self._grid.parts_per_segment:
            self._close_open()
        if not self._dated():  # held until tick 0's instant is settled (see anchor)
            return
        self._publish()
        if self._manifests_due:
            self._write_manifests()

    def end(self) -> None:
        """The stream ended: the last segment is closed, ENDLIST / type="static"."""
        self._close_open()
        self._ended = True
        self._publish()
        self._write_manifests()

    # -- internals -----------------------------------------------------------------
    def _close_open(self) -> None:
        seg = self._open
        if seg is None:
            return
        self._open = None
        for info in self._infos:
            name = LIVE_SEGMENT_TEMPLATE.format(number=seg.number)
            self.sink.publish(f"{info.id}/{name}", b"".join(seg.data[info.id]))
        for info in self._infos:
            window = self._windows[info.id]
            closed = self._skeleton(seg, complete=True, parts=tuple(seg.parts[info.id]))
            self._windows[info.id] = replace(window, segments=(*window.segments, closed))
        self._trim_window()

    @staticmethod
    def _skeleton(seg: _OpenSegment, *, complete: bool, parts: tuple[LivePart, ...]) -> LiveSegment:
        return LiveSegment(
            number=seg.number,
            start_ticks=seg.start_ticks,
            parts=parts,
            complete=complete,
            init=seg.init,
            gap=seg.gap,
            discontinuity=seg.discontinuity,
        )

    def _trim_window(self) -> None:
        """Drop the segments older than the window from every rendition alike (the
        first rendition's durations decide), and schedule their files' removal."""
        first = window_start_number(self._windows[self._infos[0].id], self._window_us)
        names: list[str] = []
        for info in self._infos:
            window = self._windows[info.id]
            for gone in window.segments:
                if gone.number >= first:
                    break
                names.append(f"{info.id}/{gone.name}")
                names += [f"{info.id}/{p.name(gone.number)}" for p in gone.parts]
            self._windows[info.id] = trim_window(window, first)
        if names:
            self._reaper.schedule(names)

    def _empty(self, info: RenditionInfo) -> LiveRendition:
        return LiveRendition(
            id=info.id,
            codec=info.codec,
            codecs=info.codecs,
            sample_rate_hz=self._grid.timescale,
            channels=info.channels,
            timescale=self._grid.timescale,
            bitrate_bps=info.bitrate_bps,
            frame_ticks=info.frame_ticks,
            segments=(),
        )

    def _rendition(self, info: RenditionInfo) -> LiveRendition:
        window = self._windows[info.id]
        if self._open is None:
            return window
        parts = tuple(self._open.parts.get(info.id, []))
        segment = self._skeleton(self._open, complete=False, parts=parts)
        return replace(window, segments=(*window.segments, segment))

    @property
    def track_id(self) -> str:
        return self._track_id

    def anchor(self, start_s: float) -> bool:
        """Move tick 0's wall-clock instant to ``start_s``; False once it is settled
        (:meth:`settle`: the instant is then fixed)."""
        with self._anchor_lock:
            if self._anchored:
                return False
            self.availability_start_ms = round(start_s * 1000)
            return True

    def settle(self) -> None:
        """Fix tick 0's instant: parts are published from the next one on (live.json
        and the playlists name every part written before it too)."""
        with self._anchor_lock:
            self._anchored = True

    def _dated(self) -> bool:
        with self._anchor_lock:
            return self._anchored

    def _publish(self) -> None:
        with self._anchor_lock:
            self._anchored = True  # the end of a stream that never settled
            start_ms = self.availability_start_ms
        presentation = LivePresentation(
            track_id=self._track_id,
            renditions=tuple(self._rendition(info) for info in self._infos),
            availability_start_ms=start_ms,
            part_target_us=self._grid.part_us,
            segment_target_us=self._grid.segment_us,
            window_us=self._window_us,
            updated_ms=round(self._clock() * 1000),
            ended=self._ended,
        )
        self.presentation = presentation
        self.sink.barrier()  # the parts and segments it names are in place
        self.sink.publish(LIVE_STATE_NAME, live_to_json(presentation).encode())
        self.sink.barrier()
        now_ms = presentation.updated_ms
        for info in self._infos:
            playlist = render_live_media_playlist(presentation, info.id, now_ms=now_ms)
            self.sink.publish(f"{info.id}/{PLAYLIST_NAME}", playlist.encode())
        self._reaper.reap()
        self.sink.barrier()

    def _write_manifests(self) -> None:
        presentation = self.presentation
        assert presentation is not None
        self.sink.publish(MASTER_NAME, render_live_master(presentation).encode())
        mpd = render_live_mpd(presentation, time_url=TIME_URL)
        self.sink.publish(MPD_NAME, mpd.encode())
        self.sink.barrier()
        self._manifests_due = False

    def finish(self) -> None:
        """Nothing is left to remove them later: the files of segments out of the
        window go now; then the sink is closed (everything in place)."""
        self._reaper.reap(everything=True)
        self.sink.close()

    def abort(self) -> None:
        """The ingest failed: the sink stops, whatever it has not written yet."""
        self.sink.abort()
