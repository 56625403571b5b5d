"""A small bounds-checked ISO BMFF box reader (ISO/IEC 14496-12 4.2).

Used by tests and verifiers to read back what the writer produced.  Malformed
input raises :class:`Mp4Error`, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cadenza.packager.errors import Mp4Error

CONTAINERS = frozenset(
    {"moov", "trak", "mdia", "minf", "stbl", "edts", "mvex", "moof", "traf", "dinf"}
)


@dataclass(frozen=True, slots=True)
class Box:
    type: str
    offset: int  # of the box header within the buffer that was parsed
    size: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class EditEntry:
    segment_duration: int
    media_time: int


@dataclass(frozen=True, slots=True)
class EditList:
    entries: tuple[EditEntry, ...]


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid end to end in ``data[start:end]`` (not descending)."""
    end = len(data) if end is None else end
    offset = start
    while offset < end:
        if end - offset < 8:
            raise Mp4Error("?", f"truncated box header at offset {offset}")
        size, raw_type = struct.unpack_from(">I4s", data, offset)
        kind = raw_type.decode("latin-1")
        header = 8
        if size == 1:
            if end - offset < 16:
                raise Mp4Error(kind, f"truncated 64-bit size at offset {offset}")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            raise Mp4Error(kind, f"size {size} is smaller than its header at offset {offset}")
        if offset + size > end:
            raise Mp4Error(kind, f"size {size} runs past the end at offset {offset}")
        yield Box(kind, offset, size, bytes(data[offset + header : offset + size]))
        offset += size


def find_boxes(data: bytes, path: str) -> list[Box]:
    """Every box at a slash-separated path such as ``moov/trak/edts/elst``."""
    first, _, rest = path.partition("/")
    found = []
    for box in iter_boxes(data):
        if box.type != first:
            continue
        if not rest:
            found.append(box)
        elif box.type in CONTAINERS:
            found.extend(find_boxes(box.payload, rest))
    return found


def parse_elst(box: Box) -> EditList:
    """Edit list box (ISO/IEC 14496-12 8.6.6)."""
    payload = box.payload
    if len(payload) < 8:
        raise Mp4Error("elst", "truncated")
    version = payload[0]
    (count,) = struct.unpack_from(">I", payload, 4)
    entry_size = 20 if version == 1 else 12
    if len(payload) < 8 + count * entry_size:
        raise Mp4Error("elst", f"{count} entries do not fit in {len(payload)} bytes")
    entries = []
    for index in range(count):
        at = 8 + index * entry_size
        if version == 1:
            duration, media_time = struct.unpack_from(">Qq", payload, at)
        else:
            duration, media_time = struct.unpack_from(">Ii", payload, at)
        entries.append(EditEntry(duration, media_time))
    return EditList(tuple(entries))
