"""MP4 boxes read by pymp4, a reader the project did not write: shared by the tests
that check what the packager (VOD and live) writes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from pymp4.parser import Box


def parse_boxes(data: bytes) -> list[Any]:
    """Every top-level box, the whole input consumed (a box that overruns fails)."""
    stream = io.BytesIO(data)
    boxes = []
    while stream.tell() < len(data):
        boxes.append(Box.parse_stream(stream))
    assert stream.tell() == len(data)
    return boxes


def walk(box: Any) -> Iterator[Any]:
    yield box
    for child in box.get("children") or []:
        yield from walk(child)


def find(boxes: list[Any], kind: bytes) -> list[Any]:
    return [b for top in boxes for b in walk(top) if b.type == kind]
