"""The typed application keys the origin's handlers share (``web.AppKey``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aiohttp import web
from cachetools import LRUCache

from cadenza.manifests.model import Presentation
from cadenza.origin.cache import CachedObject, HotCache
from cadenza.origin.core.group_segments import GroupSegments
from cadenza.origin.metrics import Metrics
from cadenza.origin.sessions import PopulationStore, RateLimiter, SessionLocks, SessionStore
from cadenza.origin.settings import Settings
from cadenza.origin.storage import Storage
from cadenza.origin.store_fallback import StoreHealth

SETTINGS: Final = web.AppKey("settings", Settings)
STORAGE: Final = web.AppKey("storage", Storage)
CACHE: Final = web.AppKey("cache", HotCache)
METRICS: Final = web.AppKey("metrics", Metrics)
# track id -> (ETag of its presentation.json, the parsed model)
PRESENTATIONS: Final = web.AppKey("presentations", dict[str, tuple[str, Presentation]])
# Rendered (filtered, steered) manifests by everything their bytes depend on:
# a per-session manifest is a lookup once its shape has been seen.
RENDERED: Final = web.AppKey("rendered", LRUCache[tuple[object, ...], CachedObject])
# Decided segments' paths resolved per model (origin/core/group_segments.py).
GROUP_SEGMENTS: Final = web.AppKey("group_segments", GroupSegments)
SESSIONS: Final = web.AppKey("sessions", SessionStore)
# Only with Redis: serialises the read-change-write of one session in this process.
SESSION_LOCKS: Final = web.AppKey("session_locks", SessionLocks)
POPULATION: Final = web.AppKey("population", PopulationStore)
BEACON_LIMITER: Final = web.AppKey("beacon_limiter", RateLimiter)
# Only when ip_rate_per_s > 0: token buckets per client address for /v1/.
IP_LIMITER: Final = web.AppKey("ip_limiter", RateLimiter)
# Only when CADENZA_REDIS_URL is set: whether the shared session store answers.
STORE_HEALTH: Final = web.AppKey("store_health", StoreHealth)
# settings.signing_keys as bytes, current key first (empty: signed URLs are off).
SIGNING_KEYS: Final = web.AppKey("signing_keys", tuple[bytes, ...])
# The clock origin-decided ABR reads (seconds, like ``time.time``): one per app,
# so tests can control it.
CLOCK: Final = web.AppKey[Callable[[], float]]("clock")
