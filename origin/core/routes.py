"""The route class of a request path (one function for the metrics label and
the fast transport's choice of what it answers), and which manifests are
rendered rather than served as stored."""

from __future__ import annotations

import enum
from typing import Final

from cadenza.manifests.media_types import suffix_of
from cadenza.manifests.model import MASTER_NAME, MPD_NAME

APP_PREFIXES: Final = ("/player", "/v1/")
_SEGMENT_SUFFIXES: Final = frozenset({".m4s", ".mp4"})
_MANIFEST_SUFFIXES: Final = frozenset({".m3u8", ".mpd"})


class RouteClass(enum.StrEnum):
    """The ``route`` label of ``cadenza_requests_total``."""

    HEALTHZ = "healthz"
    READYZ = "readyz"
    METRICS = "metrics"
    APP = "app"  # the player page and the JSON API
    MANIFEST = "manifest"  # a playlist or an MPD
    SEGMENT = "segment"  # a media or init segment
    OTHER = "other"


def route_class(path: str) -> RouteClass:
    """The class of a (raw) request path.  A manifest is a playlist or MPD by
    its suffix (``cadenza.manifests.media_types``), a segment an ``.m4s`` or
    ``.mp4``; the suffix is compared as the packager writes it (lower case)."""
    if path in ("/healthz", "/readyz", "/metrics"):
        return RouteClass(path[1:])
    if path.startswith(APP_PREFIXES) or path == "/":
        return RouteClass.APP
    suffix = suffix_of(path)
    if not path.endswith(suffix):  # an upper-case suffix: not the packager's
        return RouteClass.OTHER
    if suffix in _MANIFEST_SUFFIXES:
        return RouteClass.MANIFEST
    if suffix in _SEGMENT_SUFFIXES:
        return RouteClass.SEGMENT
    return RouteClass.OTHER


def is_track_manifest(key: str) -> bool:
    """A track's master playlist or MPD (``<track>/master.m3u8``): the
    manifests rendered from its model (filtered, steered, naming pathways)
    rather than served as stored."""
    track, slash, name = key.partition("/")
    return bool(track) and slash == "/" and name in (MASTER_NAME, MPD_NAME)
