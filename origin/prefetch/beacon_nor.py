"""A beacon's CMCD ``nor`` (CTA-5004, the next object request) for prefetch:
``POST /v1/beacons`` calls :func:`note_beacon` for each payload it folds in."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from cadenza.abr.cmcd import Cmcd
from cadenza.origin.errors import ForbiddenPathError
from cadenza.origin.paths import safe_key
from cadenza.origin.prefetch.engine import PREFETCHER
from cadenza.origin.prefetch.state import Seen


def note_beacon(app: web.Application, sid: str, cmcd: Cmcd) -> None:
    """Queue the payload's ``nor`` for the planner, resolved against its ``url``
    (v2 response mode: the request it reports on), else against the session's
    last request; a ``nor`` that names nothing the origin would warm is counted
    (``cadenza_prefetch_dropped_total{reason="bad_nor"}``), never refused."""
    prefetcher = app.get(PREFETCHER)
    value = cmcd.values.get("nor")
    if prefetcher is None or value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    nors = tuple(item if isinstance(item, str) else "" for item in items)
    base = None
    url = cmcd.string("url")
    if url:
        try:
            base = safe_key(urlsplit(url).path)
        except (ForbiddenPathError, ValueError):
            base = None
    prefetcher.note(Seen(sid, None, nors=nors, base=base))
