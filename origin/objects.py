"""Objects through the hot cache, and their answers on the aiohttp path."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from cadenza.manifests.media_types import cache_control_for
from cadenza.origin.cache import CachedObject, build_cached
from cadenza.origin.core.heads import HeadStyle
from cadenza.origin.errors import ObjectTooLargeError
from cadenza.origin.keys import CACHE, METRICS, SETTINGS, STORAGE

# The CORS fields of every head, from the settings (set by create_app).
HEAD_STYLE: Final = web.AppKey("head_style", HeadStyle)


async def load_object(app: web.Application, key: str) -> tuple[CachedObject, str]:
    """The object at ``key`` through the hot cache, and how it was found (``hit``,
    ``miss``, ``collapsed``, ``stale``); counted in the metrics.  Raises the
    storage's errors, and :class:`ObjectTooLargeError` for an object above the
    cache limit (to be streamed instead)."""
    settings = app[SETTINGS]
    storage = app[STORAGE]

    async def load() -> CachedObject:
        info = await storage.head(key)
        if info.size_bytes > settings.cache_max_object_bytes:
            raise ObjectTooLargeError(info.size_bytes)
        stored = await storage.read(key)
        control = cache_control_for(
            key,
            manifest_max_age_s=settings.manifest_max_age_s,
            segment_max_age_s=settings.segment_max_age_s,
        )
        return build_cached(key, stored, control)

    obj, how = await app[CACHE].get(key, load)
    metrics = app[METRICS]
    metrics.cache_lookup(how)
    metrics.jit.cache_answered(obj.provenance, how)  # a just-in-time object's hot answers
    if how != "hit":  # a hit changes nothing the gauge shows
        metrics.cache_bytes.set(app[CACHE].size_bytes)
    return obj, how


# Rendered manifests kept (their identity and gzip bodies), in bytes of both.
RENDERED_MAX_BYTES: Final = 16 * 1024 * 1024
