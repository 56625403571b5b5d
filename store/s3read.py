"""Tracks below ``s3://bucket/prefix``: the read face, and the completeness check the
packager's reruns share with the origin's listing.

Every request is bounded: botocore's connect and read timeouts, then twice the read
timeout for a whole request and four times for a whole body, so a dead S3 is a quick
:class:`~cadenza.store.errors.StoreUnavailableError` and a slow one a
:class:`~cadenza.store.errors.StoreTimeoutError`, never a hang.  A ranged read is
bounded only by botocore's read timeout: a large span may take a while, a stall not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from cadenza.store.api import ObjectInfo, StoredObject
from cadenza.store.complete import is_complete, is_track_name, presentation_key
from cadenza.store.errors import (
    ObjectMissingError,
    RequestFailedError,
    StoreUnavailableError,
)
from cadenza.store.s3client import (
    S3Settings,
    error_code,
    gather_all,
    is_not_found,
    open_client,
    s3_errors,
    unavailable,
)
from cadenza.store.s3sweep import get_object_or_none
from cadenza.store.s3url import S3Url


async def read_completion_markers(
    client: Any, root: S3Url, track_ids: Sequence[str], concurrency: int
) -> set[str]:
    """The track ids below ``root`` that are complete (:mod:`cadenza.store.complete`):
    their ``presentation.json`` is fetched, ``concurrency`` at a time, and parsed.
    Raises :class:`RequestFailedError` when S3 answers anything but the object or 404."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(track_id: str) -> str | None:
        url = root.join(presentation_key(track_id))
        async with gate:
            data = await get_object_or_none(client, url, "checking for a finished track")
        return track_id if data is not None and is_complete(data) else None

    found = await gather_all(one(t) for t in track_ids)
    return {t for t in found if t is not None}


class S3Store:
    """The read face over ``root``; :meth:`connect` before use, :meth:`close` after."""

    name = "s3"

    def __init__(self, root: S3Url, settings: S3Settings) -> None:
        self.root = root
        self.settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def connect(self) -> None:
        self._client = await self._stack.enter_async_context(open_client(self.settings))

    async def close(self) -> None:
        await self._stack.aclose()

    @property
    def _request_timeout_s(self) -> float:
        return self.settings.read_timeout_s * 2

    async def _call(self, key: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.wait_for(
                getattr(self._client, operation)(
                    Bucket=self.root.bucket, Key=self.root.join(key).key, **kwargs
                ),
                timeout=self._request_timeout_s,
            )
        except ClientError as exc:
            if is_not_found(exc):
                raise ObjectMissingError(key) from None
            code, status = error_code(exc)
            raise StoreUnavailableError(
                self.name, f"S3 {operation} failed: {code or status}"
            ) from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise unavailable(exc, "S3 unreachable", self.name) from exc

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
        body = await self._body(response, total_timeout_s=self.settings.read_timeout_s * 4)
        return StoredObject(self._info(response), body)

    async def _body(self, response: dict[str, Any], *, total_timeout_s: float | None) -> bytes:
        """The body; a stall longer than the read timeout or a connection dropped
        mid-body (botocore's ResponseStreamingError, IncompleteReadError, read timeouts,
        or the HTTP library's payload error) is the store being unavailable, never an
        unexpected error."""
        try:
            async with response["Body"] as stream:
                data: bytes = await asyncio.wait_for(stream.read(), timeout=total_timeout_s)
                return data
        except Exception as exc:  # botocore's, or aiohttp's own (not wrapped): the stream broke
            raise unavailable(exc, "S3 body read failed", self.name) from exc

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        response = await self._call(key, "get_object", Range=f"bytes={start}-{end}")
        return await self._body(response, total_timeout_s=None)

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(
                self._client.head_bucket(Bucket=self.root.bucket), self._request_timeout_s
            )
        except s3_errors() as exc:
            raise StoreUnavailableError(
                self.name, f"S3 bucket {self.root.bucket} unreachable"
            ) from exc

    async def _track_prefixes(self) -> list[str]:
        prefix = self.root.listing_prefix
        names: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.root.bucket, Prefix=prefix, Delimiter="/"):
            for entry in page.get("CommonPrefixes", []):
                name = str(entry["Prefix"])[len(prefix) :].strip("/")
                if is_track_name(name):
                    names.append(name)
        return names

    async def list_tracks(self) -> list[str]:
        """The complete tracks, sorted: a track whose upload has not reached its
        ``presentation.json`` (or is replacing it) is not listed."""
        failures: tuple[type[BaseException], ...] = (*s3_errors(), RequestFailedError)
        try:
            names = await asyncio.wait_for(self._track_prefixes(), self._request_timeout_s * 2)
            complete = await asyncio.wait_for(
                read_completion_markers(
                    self._client, self.root, names, self.settings.concurrency * 2
                ),
                self._request_timeout_s * 4,
            )
        except failures as exc:
            raise StoreUnavailableError(self.name, "S3 listing failed") from exc
        return sorted(complete)
