"""``live.json``: the :class:`~cadenza.manifests.live.LivePresentation` as JSON, version 1.

Every field is written, and read back strictly: a missing or mistyped field raises
:class:`~cadenza.manifests.errors.InvalidLiveStateError` naming it
(``renditions[0].segments[3].parts[1].size_bytes``).  Only the three window fields
of a rendition (``discontinuity_sequence``, ``period_number``,
``period_start_ticks``) may be absent: they came after the model, and default as it
does.  Besides the types, reading checks what the renderers rely on: segment numbers
consecutive from 1 or more, parts indexed from 0, only the last segment open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any, TypeVar

from cadenza.manifests.errors import InvalidLiveStateError, InvalidPresentationError
from cadenza.manifests.jsonfields import read_count, read_field, read_mapping, read_positive
from cadenza.manifests.live import LivePart, LivePresentation, LiveRendition, LiveSegment
from cadenza.manifests.model import Codec

LIVE_SCHEMA_VERSION = 1
T = TypeVar("T")


def live_to_dict(p: LivePresentation) -> dict[str, object]:
    return {
        "version": p.version,
        "track_id": p.track_id,
        "availability_start_ms": p.availability_start_ms,
        "part_target_us": p.part_target_us,
        "segment_target_us": p.segment_target_us,
        "window_us": p.window_us,
        "updated_ms": p.updated_ms,
        "ended": p.ended,
        "renditions": [_rendition_to_dict(r) for r in p.renditions],
    }


def _rendition_to_dict(r: LiveRendition) -> dict[str, object]:
    return {
        "id": r.id,
        "codec": r.codec,
        "codecs": r.codecs,
        "sample_rate_hz": r.sample_rate_hz,
        "channels": r.channels,
        "timescale": r.timescale,
        "bitrate_bps": r.bitrate_bps,
        "frame_ticks": r.frame_ticks,
        "discontinuity_sequence": r.discontinuity_sequence,
        "period_number": r.period_number,
        "period_start_ticks": r.period_start_ticks,
        "segments": [
            {
                "number": s.number,
                "start_ticks": s.start_ticks,
                "complete": s.complete,
                "init": s.init,
                "gap": s.gap,
                "discontinuity": s.discontinuity,
                "parts": [_part_dict(part) for part in s.parts],
            }
            for s in r.segments
        ],
    }


def live_to_json(p: LivePresentation) -> str:
    """Compact (the file is rewritten after every part), keys in a fixed order."""
    return json.dumps(live_to_dict(p), separators=(",", ":")) + "\n"


def live_from_json(text: str | bytes) -> LivePresentation:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidLiveStateError("document", f"not valid JSON: {exc}") from exc
    return live_from_dict(data)


def live_from_dict(data: object) -> LivePresentation:
    return _strict(lambda: _presentation(read_mapping(data, "document")))


def _strict(read: Callable[[], T]) -> T:
    """Run a reader, turning the shared field readers' errors into live ones."""
    try:
        return read()
    except InvalidLiveStateError:
        raise
    except InvalidPresentationError as exc:
        raise InvalidLiveStateError(exc.field, exc.reason) from None


def _presentation(d: Mapping[str, Any]) -> LivePresentation:
    version = read_positive(d, "version", "")
    if version != LIVE_SCHEMA_VERSION:
        raise InvalidLiveStateError("version", f"unsupported version {version}")
    renditions = _list(d, "renditions", "")
    if not renditions:
        raise InvalidLiveStateError("renditions", "must not be empty")
    parsed = tuple(
        _rendition(read_mapping(r, f"renditions[{i}]"), f"renditions[{i}].")
        for i, r in enumerate(renditions)
    )
    ids = [r.id for r in parsed]
    if len(set(ids)) != len(ids):
        raise InvalidLiveStateError("renditions", f"duplicate rendition ids in {ids}")
    return LivePresentation(
        track_id=_text(d, "track_id", ""),
        renditions=parsed,
        availability_start_ms=read_count(d, "availability_start_ms", ""),
        part_target_us=read_positive(d, "part_target_us", ""),
        segment_target_us=read_positive(d, "segment_target_us", ""),
        window_us=read_positive(d, "window_us", ""),
        updated_ms=read_count(d, "updated_ms", ""),
        ended=read_field(d, "ended", bool, ""),
        version=version,
    )


def _rendition(d: Mapping[str, Any], where: str) -> LiveRendition:
    codec = _text(d, "codec", where)
    if codec not in {c.value for c in Codec}:
        raise InvalidLiveStateError(f"{where}codec", f"unknown codec {codec!r}")
    raw_segments = _list(d, "segments", where)
    segments = tuple(
        _segment(read_mapping(s, f"{where}segments[{i}]"), f"{where}segments[{i}].")
        for i, s in enumerate(raw_segments)
    )
    for i, (before, after) in enumerate(pairwise(segments)):
        if after.number != before.number + 1:
            raise InvalidLiveStateError(
                f"{where}segments[{i + 1}].number",
                f"expected {before.number + 1} after {before.number}, got {after.number}",
            )
        if not before.complete:
            raise InvalidLiveStateError(
                f"{where}segments[{i}].complete", "only the last segment may be open"
            )
    return LiveRendition(
        id=_text(d, "id", where),
        codec=codec,
        codecs=_text(d, "codecs", where),
        sample_rate_hz=read_positive(d, "sample_rate_hz", where),
        channels=read_positive(d, "channels", where),
        timescale=read_positive(d, "timescale", where),
        bitrate_bps=read_positive(d, "bitrate_bps", where),
        frame_ticks=read_positive(d, "frame_ticks", where),
        segments=segments,
        discontinuity_sequence=_optional_count(d, "discontinuity_sequence", where, 0),
        period_number=_optional_count(d, "period_number", where, 1),
        period_start_ticks=_optional_count(d, "period_start_ticks", where, 0),
    )


def _part_dict(part: LivePart) -> dict[str, Any]:
    d: dict[str, Any] = {
        "index": part.index,
        "duration_ticks": part.duration_ticks,
        "size_bytes": part.size_bytes,
    }
    if part.gap:  # written only when set: the file is rewritten after every part
        d["gap"] = True
    return d


def _segment(d: Mapping[str, Any], where: str) -> LiveSegment:
    parts = []
    for i, raw in enumerate(_list(d, "parts", where)):
        at = f"{where}parts[{i}]."
        part = read_mapping(raw, f"{where}parts[{i}]")
        index = read_count(part, "index", at)
        if index != i:
            raise InvalidLiveStateError(f"{at}index", f"expected {i}, got {index}")
        parts.append(
            LivePart(
                index=index,
                duration_ticks=read_positive(part, "duration_ticks", at),
                size_bytes=read_count(part, "size_bytes", at),
                gap=read_field(part, "gap", bool, at) if "gap" in part else False,
            )
        )
    return LiveSegment(
        number=read_positive(d, "number", where),
        start_ticks=read_count(d, "start_ticks", where),
        parts=tuple(parts),
        complete=read_field(d, "complete", bool, where),
        init=read_count(d, "init", where),
        gap=read_field(d, "gap", bool, where),
        discontinuity=read_field(d, "discontinuity", bool, where),
    )


def _text(d: Mapping[str, Any], key: str, where: str) -> str:
    value = read_field(d, key, str, where)
    if not value:
        raise InvalidLiveStateError(f"{where}{key}", "must not be empty")
    return value


def _list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    return read_field(d, key, list, where)


def _optional_count(d: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = read_count(d, key, where, optional=True)
    return default if value is None else value
