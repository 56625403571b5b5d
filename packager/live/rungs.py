"""One live rung: encode the ingest's blocks continuously and cut the packets into
CMAF chunks (parts) on the shared grid (:mod:`cadenza.packager.live.grid`).

The encoder is the VOD one (:class:`cadenza.packager.encode.PacketEncoder`, same
settings).  Its priming is dropped rather than trimmed by an edit list: the
encoder is first fed enough silence that its priming fills whole frames, and
those frames are never written, so the packet covering source tick ``t`` has
decode time ``t`` and every part's ``tfdt`` is its place on the wall-clock grid.
A player joining a live stream never sees its first frame anyway; the init
segment says no priming (Opus pre-skip 0, an edit list from 0).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

import numpy as np

from cadenza.manifests.model import Codec
from cadenza.packager import mp4
from cadenza.packager.decode import Block
from cadenza.packager.downmix import StereoDownmix
from cadenza.packager.encode import PacketEncoder, RungPlan, encoder_delay_ticks
from cadenza.packager.errors import EncodeError
from cadenza.packager.live.grid import LiveGrid
from cadenza.packager.segmenter import CODECS_STRING, fragment_track_config

OPUS_PRE_SKIP = slice(10, 12)  # RFC 7845 5.1: the OpusHead's pre-skip, little-endian


@dataclass(frozen=True, slots=True)
class EncodedPart:
    """One rung's part ``index`` on the grid: a ``moof`` + ``mdat`` (no ``styp``)."""

    rendition_id: str
    index: int
    start_ticks: int
    duration_ticks: int
    data: bytes


class LiveRung:
    """Called with each block (and ``None`` once, to flush) on its own thread; puts
    each finished part on ``out``."""

    def __init__(
        self,
        plan: RungPlan,
        grid: LiveGrid,
        out: queue.Queue[EncodedPart | None],
        *,
        source_layout: str,
        source_channels: int,
        downmix: StereoDownmix | None = None,
    ) -> None:
        self.plan = plan
        self._grid = grid
        self._out = out
        self._downmix = downmix
        self._encoder = PacketEncoder(
            plan,
            source_rate_hz=grid.timescale,
            source_layout=source_layout if downmix is None else downmix.layout,
        )
        ctx = self._encoder.ctx
        self.frame_ticks: int = ctx.frame_size
        extradata = bytes(ctx.extradata or b"")
        delay = encoder_delay_ticks(plan.codec, extradata, None)
        # Silence ahead of the source so the priming ends on a frame boundary.
        self._lead_ticks = (self.frame_ticks - delay % self.frame_ticks) % self.frame_ticks
        channels_in = source_channels if downmix is None else 2
        self._lead: Block = np.zeros((channels_in, self._lead_ticks), dtype=np.float32)
        if plan.codec is Codec.OPUS:
            head = bytearray(extradata)
            head[OPUS_PRE_SKIP] = b"\x00\x00"
            extradata = bytes(head)
        self.codec_private = extradata
        self._track = fragment_track_config(plan)
        self._samples: list[bytes] = []
        self._durations: list[int] = []
        self._part_start = 0
        self._started = False

    @property
    def codecs(self) -> str:
        return CODECS_STRING[self.plan.codec]

    def init_segment(self) -> bytes:
        """``ftyp`` + ``moov``: no priming to trim, and an edit of unknown length."""
        bps = self.plan.bitrate_bps or 0
        track = mp4.TrackConfig(
            codec=self.plan.codec,
            sample_rate_hz=self.plan.sample_rate_hz,
            channels=self.plan.channels,
            codec_private=self.codec_private,
            encoder_delay_ticks=0,
            duration_ticks=0,
            average_bitrate_bps=bps,
            max_bitrate_bps=bps,
        )
        return mp4.build_init_segment(track)

    def __call__(self, block: Block | None) -> None:
        if not self._started:
            self._started = True
            if self._lead_ticks:
                self._take(self._encoder.encode(self._lead))
        if block is not None and self._downmix is not None:
            block = self._downmix(block)
        self._take(self._encoder.encode(block))
        if block is None:
            self._emit()

    def _take(self, packets: list[Any]) -> None:
        part_ticks = self._grid.part_ticks
        for packet in packets:
            start = (packet.pts or 0) - self._lead_ticks
            if start < 0:
                if start + self.frame_ticks > 0:
                    raise EncodeError(self.plan.rendition_id, "priming not on a frame boundary")
                continue  # priming: never written
            if not self._samples:
                self._part_start = start
            self._samples.append(bytes(packet))
            self._durations.append(self.frame_ticks)
            end = start + self.frame_ticks
            if end % part_ticks == 0:
                self._emit()

    def _emit(self) -> None:
        if not self._samples:
            return
        index = self._part_start // self._grid.part_ticks
        data = mp4.build_media_segment(
            self._track,
            index + 1,
            self._part_start,
            self._samples,
            self._durations,
            styp=False,
        )
        duration = sum(self._durations)
        self._out.put(EncodedPart(self.plan.rendition_id, index, self._part_start, duration, data))
        self._samples, self._durations = [], []
