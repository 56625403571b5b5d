"""The key store on S3: one object ``<prefix>/<key_id>.key`` per content key holding
its 24 RFC 3394-wrapped bytes (:mod:`cadenza.store.keys`).

A new key is written with ``If-None-Match: *`` (S3 conditional writes), so two
packagers storing the same key id at once cannot replace each other's key: the loser
reads the winner's and gets :class:`~cadenza.store.keys.KeyConflictError` unless both
keys are the same.  The client is opened on first use and kept until :meth:`close`,
within one event loop.  Keys found are kept in memory (a key id never changes its key:
a different one is refused), so the origin asks S3 once per key id, not per licence.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from cadenza.store.keys import (
    KEY_SUFFIX,
    KeyConflictError,
    check_kek,
    check_key_id,
    rewrapped,
    unwrap_key,
    wrap_key,
)
from cadenza.store.s3client import (
    S3Settings,
    error_code,
    is_not_found,
    open_client,
    request_failed,
    s3_errors,
)
from cadenza.store.s3url import S3Url

_PRECONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_CACHED_KEYS = 10_000  # 16 bytes each; the cache starts over when full


class S3KeyStore:
    def __init__(self, prefix: S3Url, kek: bytes, settings: S3Settings) -> None:
        self.prefix = prefix
        self.settings = settings
        self._kek = check_kek(kek)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._found: dict[str, bytes] = {}

    async def _connect(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(open_client(self.settings))
        return self._client

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    def _url(self, key_id: str) -> S3Url:
        return self.prefix.join(f"{check_key_id(key_id)}{KEY_SUFFIX}")

    async def _read(self, url: S3Url) -> bytes | None:
        client = await self._connect()
        try:
            response = await client.get_object(Bucket=url.bucket, Key=url.key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
                return data
        except s3_errors() as exc:
            if is_not_found(exc):
                return None
            raise request_failed(url, "reading a key", exc) from exc

    async def _write(self, url: S3Url, body: bytes, *, only_new: bool) -> bool:
        """Write ``body``; with ``only_new``, False when an object was there already."""
        client = await self._connect()
        extra = {"IfNoneMatch": "*"} if only_new else {}
        try:
            await client.put_object(
                Bucket=url.bucket,
                Key=url.key,
                Body=body,
                ContentType="application/octet-stream",
                CacheControl="no-store",
                **extra,
            )
        except s3_errors() as exc:
            code, status = error_code(exc)
            if only_new and (code in _PRECONDITION_FAILED or status in (409, 412)):
                return False
            raise request_failed(url, "storing a key", exc) from exc
        return True

    async def get(self, key_id: str) -> bytes | None:
        found = self._found.get(key_id)
        if found is not None:
            return found
        url = self._url(key_id)
        wrapped = await self._read(url)
        if wrapped is None:
            return None
        key = unwrap_key(self._kek, wrapped, str(url))
        if len(self._found) >= _CACHED_KEYS:
            self._found.clear()
        self._found[key_id] = key
        return key

    async def put(self, key_id: str, key: bytes) -> None:
        url = self._url(key_id)
        stored = await self._write(url, wrap_key(self._kek, key), only_new=True)
        if not stored and await self.get(key_id) != key:
            raise KeyConflictError(key_id)

    async def rewrap(self, new_kek: bytes) -> int:
        new_kek = check_kek(new_kek)
        client = await self._connect()
        count = 0
        try:
            paginator = client.get_paginator("list_objects_v2")
            keys: list[str] = []
            async for page in paginator.paginate(
                Bucket=self.prefix.bucket, Prefix=self.prefix.listing_prefix
            ):
                keys += [
                    str(item["Key"])
                    for item in page.get("Contents", [])
                    if str(item["Key"]).endswith(KEY_SUFFIX)
                ]
        except s3_errors() as exc:
            raise request_failed(self.prefix, "listing keys", exc) from exc
        for key in keys:
            url = S3Url(self.prefix.bucket, key)
            wrapped = await self._read(url)
            if wrapped is None:
                continue
            fresh = rewrapped(self._kek, new_kek, wrapped, str(url))
            if fresh is not None:
                await self._write(url, fresh, only_new=False)
                count += 1
        self._kek = new_kek
        return count
