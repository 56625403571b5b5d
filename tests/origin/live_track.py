"""A live track folder written from a test, as ``cadenza live`` lays it out
(``cadenza.manifests.live``): part files, whole segments once complete, init
segments, and ``live.json`` rewritten atomically after each part is in place.

The media bytes are opaque (the origin never parses them): each part is unique
and the whole segment is its parts end to end, so a test can check what it was
sent byte for byte.  The test advances the stream itself, a part at a time; no
clock runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from cadenza.manifests.live import (
    LIVE_INIT_TEMPLATE,
    LIVE_STATE_NAME,
    LivePart,
    LivePresentation,
    LiveRendition,
    LiveSegment,
)
from cadenza.manifests.live_json import live_to_json

TIMESCALE = 48_000
FRAME_TICKS = 1024


def _write_atomically(path: Path, body: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(body)
    os.replace(temporary, path)


@dataclass
class LiveTrackWriter:
    root: Path
    track: str = "radio"
    rendition_ids: tuple[str, ...] = ("aac-64k", "aac-128k")
    part_target_us: int = 256_000
    parts_per_segment: int = 4
    availability_start_ms: int = 1_800_000_000_000
    part_bytes: int = 600
    model: LivePresentation = field(init=False)

    def __post_init__(self) -> None:
        renditions = tuple(
            LiveRendition(
                id=rid,
                codec="aac",
                codecs="mp4a.40.2",
                sample_rate_hz=TIMESCALE,
                channels=2,
                timescale=TIMESCALE,
                bitrate_bps=64_000 * (i + 1),
                frame_ticks=FRAME_TICKS,
                segments=(),
            )
            for i, rid in enumerate(self.rendition_ids)
        )
        self.model = LivePresentation(
            track_id=self.track,
            renditions=renditions,
            availability_start_ms=self.availability_start_ms,
            part_target_us=self.part_target_us,
            segment_target_us=self.part_target_us * self.parts_per_segment,
            window_us=60_000_000,
            updated_ms=self.availability_start_ms,
            ended=False,
        )
        for rid in self.rendition_ids:
            folder = self.folder / rid
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(folder / LIVE_INIT_TEMPLATE.format(init=0), b"init:" + rid.encode())
        self._publish()

    @property
    def folder(self) -> Path:
        return self.root / self.track

    @property
    def part_ticks(self) -> int:
        return self.part_target_us * TIMESCALE // 1_000_000

    def part_body(self, rid: str, number: int, index: int) -> bytes:
        head = b"styp" if index == 0 else b"moof"
        tag = f"{rid}/{number}/{index};".encode()
        return head + (tag * (self.part_bytes // len(tag) + 1))[: self.part_bytes]

    def segment_file(self, rid: str, number: int) -> Path:
        return self.folder / rid / f"seg-{number:05d}.m4s"

    def add_part(self) -> tuple[int, int]:
        """Write the next part of every rendition (and the whole segment when it is
        the segment's last), then ``live.json``; the (msn, part) written."""
        renditions = []
        position = (0, 0)
        for rendition in self.model.renditions:
            segments = list(rendition.segments)
            if not segments or segments[-1].complete:
                start = sum(s.duration_ticks for s in segments)
                number = segments[-1].number + 1 if segments else 1
                segments.append(LiveSegment(number, start, (), False, 0))
            segment = segments[-1]
            index = len(segment.parts)
            body = self.part_body(rendition.id, segment.number, index)
            part = LivePart(index, self.part_ticks, len(body))
            _write_atomically(self.folder / rendition.id / part.name(segment.number), body)
            parts = (*segment.parts, part)
            complete = len(parts) == self.parts_per_segment
            if complete:
                whole = b"".join(
                    self.part_body(rendition.id, segment.number, p.index) for p in parts
                )
                _write_atomically(self.segment_file(rendition.id, segment.number), whole)
            segments[-1] = replace(segment, parts=parts, complete=complete)
            renditions.append(replace(rendition, segments=tuple(segments)))
            position = (segment.number, index)
        self.model = replace(self.model, renditions=tuple(renditions))
        self._publish()
        return position

    def add_segments(self, count: int) -> None:
        for _ in range(count * self.parts_per_segment):
            self.add_part()

    def end(self) -> None:
        self.model = replace(self.model, ended=True)
        self._publish()

    def _publish(self) -> None:
        self.model = replace(self.model, updated_ms=self.model.updated_ms + 1)
        text = live_to_json(self.model)
        _write_atomically(self.folder / LIVE_STATE_NAME, text.encode("utf-8"))
