"""Where packaged files live: a local folder or an S3 bucket.

Both backends give the same :class:`StoredObject` and raise only origin
errors: a missing key is :class:`ObjectNotFoundError`, anything that means
"storage is unwell" is :class:`StorageUnavailableError`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cadenza.origin.errors import ObjectNotFoundError, StorageTimeoutError, StorageUnavailableError

log = logging.getLogger("cadenza.origin.storage")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size_bytes: int
    mtime_s: float
    etag_hint: str  # backend validator (S3 ETag, or size+mtime for files)

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime_s, usegmt=True)


@dataclass(frozen=True, slots=True)
class StoredObject:
    info: ObjectInfo
    body: bytes


class Storage(Protocol):
    name: str

    async def head(self, key: str) -> ObjectInfo: ...

    async def read(self, key: str) -> StoredObject: ...

    async def read_range(self, key: str, start: int, end: int) -> bytes: ...

    async def ping(self) -> None: ...

    async def list_tracks(self) -> list[str]: ...

    async def close(self) -> None: ...


# stat() errors that say the name cannot exist (a segment over NAME_MAX, a
# symlink loop), not that the disk is unwell: 404, never a 503 with Retry-After.
_NO_SUCH_NAME = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


class LocalStorage:
    """Files below ``root``; symlinks that resolve outside it are not followed."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        try:
            path = (self.root / key).resolve()
        except RuntimeError:  # Python 3.11 reports a symlink loop so
            raise ObjectNotFoundError(f"{key} does not exist") from None
        if not path.is_relative_to(self.root):
            raise ObjectNotFoundError(f"{key} does not exist")
        return path

    def _stat(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"{key} does not exist") from None
        except OSError as exc:
            if exc.errno in _NO_SUCH_NAME:  # a name no file can have: the client's doing
                raise ObjectNotFoundError(f"{key} does not exist") from None
            raise StorageUnavailableError(f"cannot stat {key}: {exc.strerror}", self.name) from exc
        if not path.is_file():
            raise ObjectNotFoundError(f"{key} is not a file")
        return path, stat

    @staticmethod
    def _info(stat: os.stat_result) -> ObjectInfo:
        return ObjectInfo(stat.st_size, stat.st_mtime, f"{stat.st_size:x}-{stat.st_mtime_ns:x}")

    async def head(self, key: str) -> ObjectInfo:
        _, stat = await asyncio.to_thread(self._stat, key)
        return self._info(stat)

    def _read(self, key: str) -> StoredObject:
        path, stat = self._stat(key)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise StorageUnavailableError(f"cannot read {key}: {exc.strerror}", self.name) from exc
        return StoredObject(self._info(stat), body)

    async def read(self, key: str) -> StoredObject:
        return await asyncio.to_thread(self._read, key)

    def _open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        path, _ = self._stat(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the caller streams it, then closes it
        except FileNotFoundError:  # removed since the stat
            raise ObjectNotFoundError(f"{key} does not exist") from None
        except OSError as exc:
            raise StorageUnavailableError(f"cannot open {key}: {exc.strerror}", self.name) from exc
        try:
            stat = os.fstat(handle.fileno())  # the file being sent, even if renamed over since
        except OSError as exc:
            handle.close()
            raise StorageUnavailableError(f"cannot stat {key}: {exc.strerror}", self.name) from exc
        return handle, self._info(stat)

    async def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """An open handle on ``key`` and its validators, for streaming a large file.

        Opened before any header is sent, so a missing or unreadable file is a
        clean 404 or 503 rather than a truncated 200; the validators describe
        the very inode that will be read."""
        return await asyncio.to_thread(self._open, key)

    def _read_range(self, key: str, start: int, end: int) -> bytes:
        path, _ = self._stat(key)
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start + 1)

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await asyncio.to_thread(self._read_range, key, start, end)

    def _list_tracks(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/presentation.json") if p.is_file())

    async def list_tracks(self) -> list[str]:
        return await asyncio.to_thread(self._list_tracks)

    async def ping(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            # Only the log names the folder: answers never carry the server's paths.
            log.error("storage root %s is not a directory", self.root)
            raise StorageUnavailableError("the storage root is not a directory", self.name)

    async def close(self) -> None:
        return None


def _s3_failure(exc: BaseException, what: str, backend: str) -> StorageUnavailableError:
    """A timeout (504) or any other failure to get an answer (503)."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    if isinstance(exc, (TimeoutError, ConnectTimeoutError, ReadTimeoutError)):
        return StorageTimeoutError(f"{what}: timed out", backend)
    return StorageUnavailableError(f"{what}: {type(exc).__name__}", backend)


def _body_errors() -> tuple[type[BaseException], ...]:
    """What reading an S3 body can raise when the connection stalls or drops
    mid-body: botocore's (ResponseStreamingError, IncompleteReadError, read
    timeouts) and aiohttp's own (ClientPayloadError is not wrapped)."""
    import aiohttp
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


class S3Storage:
    """Objects below ``s3://bucket/prefix`` through aioboto3.

    Short timeouts and few retries: a dead S3 must turn into a quick 503 (a
    slow one into a 504), not a hung request.  ``AWS_ENDPOINT_URL`` (e.g. a
    moto server) is honoured."""

    name = "s3"

    def __init__(self, url: str, *, endpoint_url: str | None, timeout_s: float) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.timeout_s = timeout_s
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        import aioboto3
        from botocore.config import Config

        session = aioboto3.Session()
        config = Config(
            connect_timeout=self.timeout_s,
            read_timeout=self.timeout_s,
            retries={"max_attempts": 1, "mode": "standard"},
        )
        self._client = await self._stack.enter_async_context(
            session.client("s3", endpoint_url=self.endpoint_url, config=config)
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, key: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.wait_for(
                getattr(self._client, operation)(Bucket=self.bucket, Key=self._key(key), **kwargs),
                timeout=self.timeout_s * 2,
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise ObjectNotFoundError(f"{key} does not exist") from None
            raise StorageUnavailableError(
                f"S3 {operation} failed: {code or status}", self.name
            ) from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise _s3_failure(exc, "S3 unreachable", self.name) from exc

    @staticmethod
    def _info(response: dict[str, Any]) -> ObjectInfo:
        modified = response.get("LastModified")
        mtime = modified.timestamp() if modified is not None else 0.0
        return ObjectInfo(
            int(response["ContentLength"]), mtime, str(response.get("ETag", "")).strip('"')
        )

    async def head(self, key: str) -> ObjectInfo:
        return self._info(await self._call(key, "head_object"))

    async def read(self, key: str) -> StoredObject:
        response = await self._call(key, "get_object")
        body = await self._body(response, total_timeout_s=self.timeout_s * 4)
        return StoredObject(self._info(response), body)

    async def _body(self, response: dict[str, Any], *, total_timeout_s: float | None) -> bytes:
        """The body; a stall longer than ``timeout_s`` (botocore's read timeout) or a
        connection dropped mid-body is a storage failure, never a 500."""
        try:
            async with response["Body"] as stream:
                data: bytes = await asyncio.wait_for(stream.read(), timeout=total_timeout_s)
                return data
        except _body_errors() as exc:
            raise _s3_failure(exc, "S3 body read failed", self.name) from exc

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        response = await self._call(key, "get_object", Range=f"bytes={start}-{end}")
        # A large span may take a while: only a stall (the read timeout) ends it.
        return await self._body(response, total_timeout_s=None)

    async def ping(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            await asyncio.wait_for(self._client.head_bucket(Bucket=self.bucket), self.timeout_s * 2)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailableError(
                f"S3 bucket {self.bucket} unreachable", self.name
            ) from exc

    async def list_tracks(self) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.prefix}/" if self.prefix else ""
        tracks: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for entry in page.get("CommonPrefixes", []):
                    name = str(entry["Prefix"])[len(prefix) :].strip("/")
                    if name and not name.startswith("."):
                        tracks.append(name)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageUnavailableError("S3 listing failed", self.name) from exc
        return sorted(tracks)

    async def close(self) -> None:
        await self._stack.aclose()
