"""What prefetch keeps of a session, and the work items of its two queues."""

from __future__ import annotations

from dataclasses import dataclass

from cadenza.manifests.model import Rendition
from cadenza.origin.prefetch.plan import Prediction, WarmReason


@dataclass(frozen=True, slots=True)
class PrefetchSession:
    """What prefetch knows of one session."""

    content: str | None = None  # the content id last played (CMCD cid, else the track)
    track: str | None = None  # the track last requested
    key: str | None = None  # the object last requested
    rendition: str | None = None  # its rung, from the last media segment
    hls: bool = False  # it asked for a media playlist of ``track``
    near_end: bool = False  # it reached the half of ``track``
    prepared: frozenset[str] = frozenset()  # next tracks prepared while on ``track``
    predicted: tuple[Prediction, ...] = ()


@dataclass(frozen=True, slots=True)
class Seen:
    """A session's media request for ``key``; or (``key`` None) a queue stated for
    it, or a beacon naming ``nors`` relative to ``base`` (its CMCD ``url``; None:
    the session's last request)."""

    sid: str
    key: str | None
    cid: str | None = None
    nors: tuple[str, ...] = ()
    base: str | None = None


@dataclass(frozen=True, slots=True)
class WarmJob:
    """One object to warm, or (``key`` None) a next track to prepare."""

    sid: str
    reason: WarmReason
    key: str | None = None
    track: str | None = None
    playing: Rendition | None = None
