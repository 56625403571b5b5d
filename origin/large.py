"""Objects above the cache limit, streamed: local files a chunk at a time,
S3 by ranged reads, with the validators and ranges of cached objects."""

from __future__ import annotations

import asyncio
from typing import BinaryIO, Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from cadenza.manifests.media_types import cache_control_for, content_type_for
from cadenza.origin.core.validators import check_preconditions, preconditions_hold
from cadenza.origin.keys import SETTINGS, STORAGE
from cadenza.origin.ranges import parse_range
from cadenza.origin.storage import LocalStorage


def _preconditions_hold(request: web.Request, etag: str, mtime_s: float) -> bool:
    headers = request.headers
    check_preconditions(headers.get("If-Match"), headers.get("If-Unmodified-Since"), etag, mtime_s)
    return preconditions_hold(
        headers.get("If-None-Match"), headers.get("If-Modified-Since"), etag, mtime_s
    )


LARGE_CHUNK_BYTES: Final = 256 * 1024


class _FileSpanResponse(web.StreamResponse):
    """Bytes ``start`` to ``start + length - 1`` of an open local file, read a chunk
    at a time as the client takes them, so a large object is never whole in memory.

    Like ``web.FileResponse`` it sends itself when aiohttp prepares it, after the
    edge middleware added its headers; unlike it, the range was decided by
    :func:`parse_range`, so large and cached objects answer a Range alike.  It
    owns ``handle`` and closes it once sent."""

    def __init__(
        self, handle: BinaryIO, start: int, length: int, *, status: int, headers: dict[str, str]
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._handle = handle
        self._span_start = start
        self._span_length = length
        self.content_length = length

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        handle = self._handle
        try:
            writer = await super().prepare(request)
            await asyncio.to_thread(handle.seek, self._span_start)
            remaining = self._span_length
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(LARGE_CHUNK_BYTES, remaining))
                if not chunk:  # the file shrank since its size was sent: drop the connection
                    raise ConnectionResetError(f"{handle.name} shrank while being sent")
                await self.write(chunk)
                remaining -= len(chunk)
        finally:
            handle.close()
        await self.write_eof()
        return writer


async def serve_large(request: web.Request, key: str) -> web.StreamResponse:
    """Objects above the cache limit: local files streamed in chunks, S3 by ranged
    reads; validators, conditional requests and ranges as for cached objects."""
    storage = request.app[STORAGE]
    settings = request.app[SETTINGS]
    control = cache_control_for(
        key,
        manifest_max_age_s=settings.manifest_max_age_s,
        segment_max_age_s=settings.segment_max_age_s,
    )
    handle: BinaryIO | None = None
    if isinstance(storage, LocalStorage) and request.method != "HEAD":
        handle, info = await storage.open(key)
    else:
        info = await storage.head(key)
    try:
        etag = f'"{info.etag_hint}"'
        headers = {
            "Content-Type": content_type_for(key),
            "Cache-Control": control,
            "ETag": etag,
            "Last-Modified": info.last_modified,
            "Accept-Ranges": "bytes",
            "X-Cadenza-Cache": "bypass",
        }
        if not _preconditions_hold(request, etag, info.mtime_s):
            return web.Response(status=304, headers=headers)
        if_range = request.headers.get("If-Range")
        span = None
        if if_range is None or if_range.strip() == etag:
            span = parse_range(request.headers.get("Range"), info.size_bytes)
        start, end = (span.start, span.end) if span else (0, info.size_bytes - 1)
        status = 206 if span else 200
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size_bytes}"
        if request.method == "HEAD":
            head = web.Response(status=status, headers=headers)
            head.headers["Content-Length"] = str(end - start + 1)
            return head
        if handle is not None:
            length = end - start + 1
            response = _FileSpanResponse(handle, start, length, status=status, headers=headers)
            handle = None  # the response closes it once sent
            return response
        body = await storage.read_range(key, start, end)
        return web.Response(status=status, body=body, headers=headers)
    finally:
        if handle is not None:
            handle.close()
