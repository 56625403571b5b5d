"""What the application opens at startup and closes at cleanup
(``cleanup_ctx``): storage, and the Redis session stores; and the error of
a listen that failed (:class:`ListenError`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from cadenza.origin.keys import (
    METRICS,
    POPULATION,
    SESSION_LOCKS,
    SESSIONS,
    SETTINGS,
    STORAGE,
    STORE_HEALTH,
)
from cadenza.origin.metrics_jit import ReportsJitEvents
from cadenza.origin.redis_store import RedisBackend
from cadenza.origin.sessions import SessionLocks
from cadenza.origin.settings import Settings
from cadenza.origin.storage import LocalStorage, S3Storage, Storage
from cadenza.origin.store_fallback import FallbackPopulationStore, FallbackSessionStore, StoreHealth


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sessions and population priors in Redis, shared by every replica, in front
    of the memory stores, which serve alone while Redis is unreachable."""
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    backend = RedisBackend(settings.redis_url, timeout_s=settings.redis_timeout_s)
    health = StoreHealth(backend.ping, retry_s=settings.redis_retry_s, metrics=app[METRICS])
    app[STORE_HEALTH] = health
    # Redis awaits between reading a session and writing it back.
    app[SESSION_LOCKS] = SessionLocks()
    app[SESSIONS] = FallbackSessionStore(
        backend.sessions(max_sessions=settings.sessions_max, ttl_s=settings.session_ttl_s),
        app[SESSIONS],
        health,
    )
    app[POPULATION] = FallbackPopulationStore(backend.population(), app[POPULATION], health)
    await health.check()  # a dead Redis is logged now, but does not stop the origin
    try:
        yield
    finally:
        await backend.close()


# Builds another storage around the one the settings name (``cadenza serve --sources``
# wraps it in the just-in-time store); module-level functions only, so that it travels
# to the worker processes (``spawn``).
WrapStorage = Callable[[Storage, Settings], Storage]
WRAP_STORAGE: Final[web.AppKey[WrapStorage]] = web.AppKey("wrap_storage")


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    storage: Storage
    if settings.is_s3:
        s3 = S3Storage(
            settings.root,
            endpoint_url=settings.s3_endpoint_url,
            timeout_s=settings.storage_timeout_s,
        )
        await s3.open()
        storage = s3
    else:
        storage = LocalStorage(Path(settings.root))
    wrap = app.get(WRAP_STORAGE)
    if wrap is not None:
        storage = wrap(storage, settings)
        if isinstance(storage, ReportsJitEvents):
            storage.attach_events(app[METRICS].jit)
    app[STORAGE] = storage
    try:
        yield
    finally:
        await storage.close()


class ListenError(Exception):
    """The origin could not listen on its address: the port is taken, the
    address is not this machine's, the port needs privileges."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
