"""Where packaged files live, for the origin: a thin async adapter over the track
store's read face (:mod:`cadenza.store`), local folder or S3 bucket.

Both backends give the same :class:`StoredObject` and raise only origin errors: a
missing key is :class:`ObjectNotFoundError` (404), anything that means "storage is
unwell" is :class:`StorageUnavailableError` (503), or :class:`StorageTimeoutError`
(504) when it did not answer in time.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from cadenza.origin.errors import (
    BuilderBusyError,
    ObjectNotFoundError,
    OriginError,
    StorageTimeoutError,
    StorageUnavailableError,
)
from cadenza.origin.errors import SourceUnusableError as OriginSourceUnusableError
from cadenza.store.api import ObjectInfo, StoredObject, TrackReader
from cadenza.store.errors import (
    BuildBusyError,
    ObjectMissingError,
    SourceUnusableError,
    StoreError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from cadenza.store.local import LocalStore
from cadenza.store.s3client import S3Settings
from cadenza.store.s3read import S3Store
from cadenza.store.s3url import parse_s3_url

__all__ = ["LocalStorage", "ObjectInfo", "S3Storage", "Storage", "StoredObject"]

T = TypeVar("T")
S3_ATTEMPTS = 2  # per request, the first included: a dead S3 must be a quick 503


class Storage(TrackReader, Protocol):
    """The store's read face with the origin's errors (see the module docstring)."""


def origin_error(exc: StoreError, backend: str) -> OriginError:
    """A store error as the origin error (and so the HTTP status) it answers with."""
    if isinstance(exc, ObjectMissingError):
        return ObjectNotFoundError(str(exc))
    if isinstance(exc, BuildBusyError):
        return BuilderBusyError(exc.detail, exc.backend)
    if isinstance(exc, SourceUnusableError):
        return OriginSourceUnusableError(str(exc))
    if isinstance(exc, StoreTimeoutError):
        return StorageTimeoutError(exc.detail, exc.backend)
    if isinstance(exc, StoreUnavailableError):
        return StorageUnavailableError(exc.detail, exc.backend)
    return StorageUnavailableError(str(exc), backend)


async def _mapped(call: Awaitable[T], backend: str) -> T:
    try:
        return await call
    except StoreError as exc:
        raise origin_error(exc, backend) from exc


class _Adapter:
    """The origin's face of a store: the same calls, origin errors."""

    def __init__(self, store: TrackReader) -> None:
        self._store = store
        self.name = store.name

    async def head(self, key: str) -> ObjectInfo:
        return await _mapped(self._store.head(key), self.name)

    async def read(self, key: str) -> StoredObject:
        return await _mapped(self._store.read(key), self.name)

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await _mapped(self._store.read_range(key, start, end), self.name)

    async def ping(self) -> None:
        await _mapped(self._store.ping(), self.name)

    async def list_tracks(self) -> list[str]:
        """The complete tracks (:mod:`cadenza.store.complete`), sorted."""
        return await _mapped(self._store.list_tracks(), self.name)

    async def close(self) -> None:
        await self._store.close()


class LocalStorage(_Adapter):
    """Files below ``root``; symlinks that resolve outside it are not followed."""

    def __init__(self, root: Path) -> None:
        self._local = LocalStore(root)
        super().__init__(self._local)

    async def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """An open handle on ``key`` and its validators, for streaming a large file.

        Opened before any header is sent, so a missing or unreadable file is a
        clean 404 or 503 rather than a truncated 200; the validators describe
        the very inode that will be read."""
        return await _mapped(self._local.open(key), self.name)


class S3Storage(_Adapter):
    """Objects below ``s3://bucket/prefix``; :meth:`open` connects.

    Short timeouts and few retries: a dead S3 must turn into a quick 503 (a slow one
    into a 504), not a hung request.  ``AWS_ENDPOINT_URL`` (e.g. a moto server) is
    honoured."""

    def __init__(self, url: str, *, endpoint_url: str | None, timeout_s: float) -> None:
        root = parse_s3_url(url, prefix=True)
        settings = S3Settings(
            endpoint_url=endpoint_url,
            max_attempts=S3_ATTEMPTS,
            connect_timeout_s=timeout_s,
            read_timeout_s=timeout_s,
        )
        self._s3 = S3Store(root, settings)
        super().__init__(self._s3)

    async def open(self) -> None:
        await self._s3.connect()
