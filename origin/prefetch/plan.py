"""What to prepare for a session, decided without I/O: the likely next tracks
(a stated queue first, then learned transitions), the rung the session will
likely play there, the objects to warm, whether a CMCD ``nor`` (CTA-5004: the
next object request, a URL relative to the request's) names an object the
origin would serve from the same track folder, and when a track is near enough
to its end for its successors to be prepared."""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from cadenza.manifests.model import PRESENTATION_NAME, Presentation, Rendition
from cadenza.origin.core.routes import RouteClass, route_class
from cadenza.origin.errors import ForbiddenPathError
from cadenza.origin.paths import safe_key

# A track id: one path segment the packager writes ([A-Za-z0-9._-], no leading dot).
TRACK_ID_MAX_CHARS: Final = 128
# nor values longer than this are not looked at (a valid one is a short relative path).
NOR_MAX_CHARS: Final = 512


class PredictionSource(enum.StrEnum):
    """Where a predicted next track comes from."""

    QUEUE = "queue"  # the session's stated queue: probability 1
    LEARNED = "learned"  # counted transitions of earlier sessions


class WarmReason(enum.StrEnum):
    """Why an object is warmed (``cadenza_prefetch_issued_total{reason}``)."""

    QUEUE = "queue"
    LEARNED = "learned"
    NOR = "nor"  # the player named it (CMCD nor)


@dataclass(frozen=True, slots=True)
class Prediction:
    track: str
    probability: float
    source: PredictionSource

    def to_dict(self) -> dict[str, object]:
        return {
            "track": self.track,
            "probability": round(self.probability, 4),
            "source": self.source.value,
        }

    @property
    def reason(self) -> WarmReason:
        return WarmReason(self.source.value)


def is_track_id(text: str) -> bool:
    """A name the origin serves a track folder under (``origin.paths`` rules)."""
    if not text or len(text) > TRACK_ID_MAX_CHARS or "/" in text or "%" in text:
        return False
    try:
        return safe_key("/" + text) == text
    except ForbiddenPathError:
        return False


def queue_next(current: str, queue: Sequence[str]) -> str | None:
    """The queue's track after ``current`` (its first entry when ``current`` is
    not in it); None at its end."""
    if current not in queue:
        return queue[0] if queue else None
    index = queue.index(current) + 1
    while index < len(queue) and queue[index] == current:
        index += 1
    return queue[index] if index < len(queue) else None


def predict_next(
    current: str,
    queue: Sequence[str],
    successors: Sequence[tuple[str, int]],
    *,
    min_probability: float,
    max_tracks: int,
) -> tuple[Prediction, ...]:
    """The likely next tracks after ``current``, most likely first, at most
    ``max_tracks``: the queue's next (probability 1), then learned successors
    whose share of the counted transitions from ``current`` (count over the sum
    of the kept successors' counts) is at least ``min_probability``."""
    found: list[Prediction] = []
    stated = queue_next(current, queue)
    if stated is not None and stated != current:
        found.append(Prediction(stated, 1.0, PredictionSource.QUEUE))
    total = sum(count for _, count in successors if count > 0)
    ranked = sorted(successors, key=lambda item: (-item[1], item[0]))
    for track, count in ranked:
        if total <= 0 or count <= 0 or track in (current, stated):
            continue
        probability = count / total
        if probability >= min_probability:
            found.append(Prediction(track, probability, PredictionSource.LEARNED))
    return tuple(found[: max(0, max_tracks)])


def likely_rendition(presentation: Presentation, playing: Rendition | None) -> Rendition | None:
    """The rung a session playing ``playing`` will likely start the next track
    on: the rendition of the same codec whose bitrate is nearest; else (no
    such codec, or nothing known) the ladder's start rung, its first rendition
    (the first variant a player reads)."""
    renditions = presentation.renditions
    if not renditions:
        return None
    if playing is not None:
        same = [r for r in renditions if r.codec is playing.codec]
        if same:
            wanted = _bitrate_bps(playing)
            return min(same, key=lambda r: (abs(_bitrate_bps(r) - wanted), _bitrate_bps(r)))
    return renditions[0]


def _bitrate_bps(rendition: Rendition) -> int:
    return rendition.target_bitrate_bps or rendition.average_bitrate_bps


def warm_keys(track: str, rendition: Rendition, segments: int) -> tuple[str, ...]:
    """What a player starting ``rendition`` of ``track`` (its folder) asks for
    first, in that order: the model the manifests are rendered from, the HLS
    media playlist, the init segment and the first ``segments`` media segments."""
    folder = f"{track}/{rendition.id}"
    keys = [f"{track}/{PRESENTATION_NAME}", f"{folder}/{rendition.playlist_name}"]
    keys.append(f"{folder}/{rendition.init_name}")
    for segment in rendition.segments[: max(0, segments)]:
        name = f"{folder}/{rendition.segment_name(segment)}"
        if name not in keys:  # single-file layout: one file
            keys.append(name)
    return tuple(keys)


def resolve_nor(nor: str, key: str) -> str | None:
    """The storage key a CMCD ``nor`` names, resolved against the request for
    ``key`` (RFC 3986 5.2 reference resolution), or None when it must not be
    warmed: not a relative reference (a scheme or host), a path the origin
    would refuse (``origin.paths.safe_key``), outside the request's track
    folder, or not a manifest or segment.  CTA-5004 sends it URL-encoded."""
    if not nor or len(nor) > NOR_MAX_CHARS:
        return None
    text = unquote(nor) if "%" in nor else nor
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme or parts.netloc or not parts.path:
        return None
    joined = parts.path
    if not joined.startswith("/"):
        joined = posixpath.dirname("/" + key) + "/" + joined
    if "/./" in joined + "/" or "/../" in joined + "/":
        joined = posixpath.normpath(joined)
    try:
        resolved = safe_key(joined)
    except ForbiddenPathError:
        return None
    if resolved.partition("/")[0] != key.partition("/")[0] or "/" not in resolved:
        return None
    if route_class("/" + resolved) not in (RouteClass.SEGMENT, RouteClass.MANIFEST):
        return None
    return resolved


def segment_position(presentation: Presentation, key: str) -> tuple[Rendition, int, int] | None:
    """The rendition of a media segment ``key`` names, the segment's index and
    the rendition's segment count; None for any other key."""
    _, rendition_id, name = key.split("/", 2) if key.count("/") == 2 else ("", "", "")
    if not rendition_id:
        return None
    try:
        rendition = presentation.rendition(rendition_id)
    except KeyError:
        return None
    for index, segment in enumerate(rendition.segments):
        if rendition.segment_name(segment) == name:
            return rendition, index, len(rendition.segments)
    return None


def near_end(index: int, count: int) -> bool:
    """Whether the segment at ``index`` (from 0) of ``count`` is at or past the
    track's half: then its successors are prepared (minutes ahead for a song,
    still one segment ahead for a track of two)."""
    return count > 0 and 2 * (index + 1) >= count


def in_last_segments(index: int, count: int, last: int = 2) -> bool:
    """One of the track's ``last`` segments: answered with a preload hint."""
    return count > 0 and index >= count - last
