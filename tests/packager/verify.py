"""Decode packaged renditions back with FFmpeg (PyAV) to check them as a player would."""

from __future__ import annotations

import tempfile
from pathlib import Path

import av

from cadenza.manifests.model import Rendition, SegmentLayout
from cadenza.packager.mp4read import find_boxes, parse_elst


def rendition_bytes(folder: Path, rendition: Rendition) -> bytes:
    """The rendition as one file: init followed by every segment, as a player appends them."""
    if rendition.layout is SegmentLayout.SINGLE:
        return (folder / "media.mp4").read_bytes()
    parts = [(folder / "init.mp4").read_bytes()]
    parts += [(folder / rendition.segment_name(s)).read_bytes() for s in rendition.segments]
    return b"".join(parts)


def read_edit_list(init: bytes) -> tuple[int, int]:
    """(media_time, segment_duration) of the single edit."""
    elst = parse_elst(find_boxes(init, "moov/trak/edts/elst")[0])
    assert len(elst.entries) == 1
    entry = elst.entries[0]
    return entry.media_time, entry.segment_duration


def decoded_ticks(data: bytes) -> int:
    """Every sample the decoder outputs, with FFmpeg's own edit-list handling disabled."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        with av.open(handle.name, options={"ignore_editlist": "1"}) as container:
            stream = container.streams.audio[0]
            return sum(frame.samples for frame in container.decode(stream))


def decoded_ticks_after_edit_list(folder: Path, rendition: Rendition) -> int:
    """What a player that honours the edit list plays: decoded samples minus the
    priming (media_time), capped at the edit's duration.  The cap must not cut
    more than one codec frame of padding, or the file would carry junk samples."""
    data = rendition_bytes(folder, rendition)
    media_time, duration = read_edit_list(data)
    playable = decoded_ticks(data) - media_time
    assert 0 <= playable - duration < 8192, (playable, duration)
    return min(playable, duration)
