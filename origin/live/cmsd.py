"""CMSD (CTA-5006) on a live track's media: the same headers a VOD segment of a known
session gets, from the live model rather than ``presentation.json``.

- ``CMSD-Static``: ``ot=a``, the rung's bitrate ``br`` (its target: a live rung has
  no measured peak until its segments are in), the object's duration ``d`` (a part's,
  or a whole segment's, as the model states it), and ``st=l``.
- ``CMSD-Dynamic``: the origin's own throughput estimate ``etp`` for the session, as
  for VOD (:func:`cadenza.origin.rendering.cmsd_dynamic_for`); no ``mb``: the live
  ladder has no guidance cap.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from cadenza.abr.guidance import CmsdStreamType, cmsd_static_fields
from cadenza.manifests.live import LivePresentation
from cadenza.origin.live.keys import live_watch_of
from cadenza.origin.rendering import cmsd_dynamic_for
from cadenza.origin.telemetry import Observed

_MEDIA: Final = re.compile(r"seg-(\d{5,})(?:\.p(\d+))?\.m4s")


def live_duration_ms(model: LivePresentation, rendition_id: str, name: str) -> int | None:
    """The duration of the part or segment ``name`` of ``rendition_id``, in ms; None
    when the model does not hold it (left the window, not written yet)."""
    found = _MEDIA.fullmatch(name)
    if found is None:
        return None
    number = int(found[1])
    try:
        rendition = model.rendition(rendition_id)
    except KeyError:
        return None
    for segment in rendition.segments:
        if segment.number != number:
            continue
        if found[2] is None:
            ticks = segment.duration_ticks if segment.complete else None
        else:
            index = int(found[2])
            ticks = segment.parts[index].duration_ticks if index < len(segment.parts) else None
        return None if ticks is None else ticks * 1000 // rendition.timescale
    return None


async def live_cmsd_for(
    app: web.Application, key: str, observed: Observed
) -> tuple[str, str] | None:
    """CMSD-Static and CMSD-Dynamic for ``key`` (``<track>/<rendition>/<file>.m4s``)
    of a live track; None when it is not one, or names no rendition of it."""
    track, rendition_id, name = key.split("/", 2)
    watch = await live_watch_of(app, track)
    if watch is None:
        return None
    model = watch.model
    try:
        bitrate_bps = model.rendition(rendition_id).bitrate_bps
    except KeyError:
        return None
    duration_ms = live_duration_ms(model, rendition_id, name)
    static = cmsd_static_fields(bitrate_bps, duration_ms, CmsdStreamType.LIVE)
    return static, await cmsd_dynamic_for(app, observed, None)
