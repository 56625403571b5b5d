"""Hot objects in memory, with their HTTP headers precomputed.

A byte-bounded LRU (cachetools, sized by body length) holds each object with
its strong ETag, Last-Modified, content type and Cache-Control already
rendered, plus a gzip copy for manifests, so a hit touches no file system and
computes nothing.  Concurrent misses for one key share a single storage read
(single-flight).  Manifests are revalidated against storage after their TTL;
if storage is down then, the stale copy keeps being served.  Load times and TTL
checks read ``clock`` (``time.monotonic`` unless a caller, such as a test,
passes another).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import LRUCache

# One table with the packager's S3 uploads: the same headers whether a CDN reads
# through the origin or straight from the bucket.
from cadenza.manifests.media_types import content_type_for, is_manifest
from cadenza.origin.errors import StorageUnavailableError
from cadenza.origin.storage import StoredObject
from cadenza.store.api import Provenance


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


@dataclass(frozen=True, slots=True)
class CachedObject:
    key: str
    body: bytes
    gzip_body: bytes | None  # manifests only
    etag: str
    gzip_etag: str | None
    last_modified: str
    mtime_s: float
    content_type: str
    cache_control: str
    loaded_at_s: float
    manifest: bool
    provenance: Provenance = Provenance.STORED  # how storage came by it (cadenza.store.api)

    @property
    def size_bytes(self) -> int:
        return len(self.body)


def build_cached(
    key: str,
    stored: StoredObject,
    cache_control: str,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> CachedObject:
    manifest = is_manifest(key)
    gz = gzip.compress(stored.body, compresslevel=6, mtime=0) if manifest else None
    return CachedObject(
        key=key,
        body=stored.body,
        gzip_body=gz,
        etag=strong_etag(stored.body),
        gzip_etag=None if gz is None else strong_etag(stored.body)[:-1] + '-gz"',
        last_modified=stored.info.last_modified,
        mtime_s=stored.info.mtime_s,
        content_type=content_type_for(key),
        cache_control=cache_control,
        loaded_at_s=clock(),
        manifest=manifest,
        provenance=stored.provenance,
    )


class HotCache:
    def __init__(
        self,
        max_bytes: int,
        max_object_bytes: int,
        manifest_ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lru: LRUCache[str, CachedObject] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda o: max(1, o.size_bytes)
        )
        self.max_object_bytes = max_object_bytes
        self.manifest_ttl_s = manifest_ttl_s
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[CachedObject]] = {}
        self.hits = 0
        self.misses = 0
        self.collapsed = 0

    @property
    def size_bytes(self) -> int:
        return int(self._lru.currsize)

    def peek(self, key: str) -> CachedObject | None:
        return self._lru.get(key)

    def hot(self, key: str) -> CachedObject | None:
        """The cached object if it can be served as it is (a manifest within its
        TTL, anything else while cached), counted as a hit; None otherwise.  For
        callers that cannot wait: :meth:`get` loads and revalidates."""
        cached = self._lru.get(key)
        if cached is None or not self._fresh(cached):
            return None
        self.hits += 1
        return cached

    def _fresh(self, cached: CachedObject) -> bool:
        return not cached.manifest or self._clock() - cached.loaded_at_s < self.manifest_ttl_s

    async def get(
        self, key: str, load: Callable[[], Awaitable[CachedObject]]
    ) -> tuple[CachedObject, str]:
        """The object and how it was found: ``hit``, ``miss``, ``collapsed`` or ``stale``."""
        cached = self._lru.get(key)
        if cached is not None and self._fresh(cached):
            self.hits += 1
            return cached, "hit"
        inflight = self._inflight.get(key)
        if inflight is not None:
            self.collapsed += 1
            try:
                return await asyncio.shield(inflight), "collapsed"
            except StorageUnavailableError:
                if cached is None:
                    raise
                return cached, "stale"  # as the request that led the failed load
        self.misses += 1
        future: asyncio.Future[CachedObject] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            fresh = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            if cached is not None and isinstance(exc, StorageUnavailableError):
                return cached, "stale"  # stale-if-error for manifests past their TTL
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(fresh)
        if fresh.size_bytes <= self.max_object_bytes:
            self._lru[key] = fresh
        return fresh, "miss"
