"""The live sink over an S3 prefix: ``cadenza live INPUT --out s3://bucket/prefix``.

The publisher's objects go to ``prefix/<track_id>/`` through one client of the
track store (:mod:`cadenza.store.s3client`: ``AWS_ENDPOINT_URL``, timeouts, retries)
on an event loop of its own thread, so the publisher never waits for a request:
:meth:`S3Sink.publish` and :meth:`S3Sink.remove` collect a batch, and
:meth:`S3Sink.barrier` hands the batch over.  The uploader sends one batch at a time,
its objects concurrently (at most ``concurrency`` requests), so the publisher's order
holds on S3 as on a disk: a part's object is in place before the ``live.json`` that
names it, ``live.json`` before the playlists.

Bounded: at most ``max_pending_batches`` batches wait (a few seconds of stream).
When S3 is slower than real time the backlog grows to that bound; a warning is
logged when it is half full, and the publisher then waits for room, failing with a
:class:`~cadenza.packager.errors.StorageError` when none frees within
``stall_timeout_s``: memory never grows without bound.  A request that still fails
after the client's retries fails the stream the same way (exit status 1).

Objects carry the ``Content-Type`` the origin serves them with
(:mod:`cadenza.manifests.media_types`); parts, segments and init segments are
immutable, while ``live.json`` and the manifests change with every part and are
stored ``Cache-Control: no-cache`` (a CDN reading the bucket revalidates them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cadenza.manifests.live import LIVE_STATE_NAME
from cadenza.manifests.media_types import cache_control_for, content_type_for, is_manifest
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.packager.errors import OutputError, PackagerError, StorageError, from_store
from cadenza.store.errors import StoreError
from cadenza.store.s3client import S3Settings, gather_all, open_client, request_failed, s3_errors
from cadenza.store.s3upload import DELETE_BATCH, S3Uploader
from cadenza.store.s3url import S3Url

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_BATCHES: Final = 64  # a publisher sends 3-4 batches a part
DEFAULT_STALL_TIMEOUT_S: Final = 20.0
DELAYS_KEPT: Final = 4096  # the newest batches' hand-off-to-stored delays, for the log
# A live request that hangs is worth less than a retry: shorter than the packager's.
LIVE_CONNECT_TIMEOUT_S: Final = 5.0
LIVE_READ_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class S3Output:
    """``--out s3://bucket/prefix``: where live tracks go, and how to talk to S3."""

    root: S3Url
    settings: S3Settings = field(default_factory=S3Settings)
    max_pending_batches: int = DEFAULT_MAX_PENDING_BATCHES
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class _Put:
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Delete:
    name: str


_Batch = list[_Put | _Delete]


class S3Sink:
    """See the module docstring; made by :meth:`open`."""

    def __init__(self, output: S3Output, track_id: str) -> None:
        self._track = output.root.join(track_id)
        self._settings = replace(
            output.settings,
            connect_timeout_s=min(output.settings.connect_timeout_s, LIVE_CONNECT_TIMEOUT_S),
            read_timeout_s=min(output.settings.read_timeout_s, LIVE_READ_TIMEOUT_S),
        )
        self._max_pending = max(1, output.max_pending_batches)
        self._stall_timeout_s = output.stall_timeout_s
        self._batch: _Batch = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="live s3 upload", daemon=True
        )
        self._stack = AsyncExitStack()
        self._client: Any = None
        # each batch with the monotonic instant it was handed over
        self._queue: asyncio.Queue[tuple[float, _Batch] | None] | None = None
        self.delays_s: deque[float] = deque(maxlen=DELAYS_KEPT)
        self._worker: asyncio.Task[None] | None = None
        self._gate: asyncio.Semaphore | None = None
        self._failure: BaseException | None = None
        self._warned = False
        self.sent_bytes = 0
        self.requests = 0

    @classmethod
    def open(cls, output: S3Output, track_id: str) -> S3Sink:
        """Connect, and prepare ``prefix/track_id/``: a packaged track there is refused
        (:class:`OutputError`), a previous live stream's objects are deleted."""
        sink = cls(output, track_id)
        sink._thread.start()
        try:
            sink._call(sink._start())
        except BaseException:
            sink._stop_loop()
            raise
        return sink

    @property
    def location(self) -> str:
        return str(self._track)

    # -- the publisher's side ------------------------------------------------------
    def publish(self, name: str, data: bytes) -> None:
        self._raise_failure()
        self._batch.append(_Put(name, data))

    def remove(self, name: str) -> None:
        self._raise_failure()
        self._batch.append(_Delete(name))

    def barrier(self) -> None:
        self._raise_failure()
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        assert self._queue is not None
        waiting = self._queue.qsize()
        if waiting >= self._max_pending // 2 and not self._warned:
            self._warned = True
            log.warning(
                "%s: S3 uploads are slower than real time: %d of %d batches waiting",
                self.location,
                waiting,
                self._max_pending,
            )
        elif waiting == 0:
            self._warned = False
        handed = (time.monotonic(), batch)
        future = asyncio.run_coroutine_threadsafe(self._queue.put(handed), self._loop)
        try:
            future.result(timeout=self._stall_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._raise_failure()
            raise StorageError(
                self.location,
                f"S3 uploads fell behind real time: {self._max_pending} batches waited "
                f"{self._stall_timeout_s:g} s for room (S3 too slow for this stream)",
            ) from None
        self._raise_failure()

    def close(self) -> None:
        try:
            self.barrier()
        except BaseException:
            self.abort()
            raise
        try:
            self._call(self._finish())
        finally:
            self._stop_loop()
        self._raise_failure()
        if self.delays_s:
            delays = sorted(self.delays_s)
            log.info(
                "%s: %d requests, %d bytes; batch handed over to stored: "
                "median %.1f ms, max %.1f ms over the last %d batches",
                self.location,
                self.requests,
                self.sent_bytes,
                1000 * delays[len(delays) // 2],
                1000 * delays[-1],
                len(delays),
            )

    def abort(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout_s=self._stall_timeout_s)
        self._stop_loop()

    # -- internals -----------------------------------------------------------------
    def _call(self, coroutine: Any, timeout_s: float | None = None) -> Any:
        """Run ``coroutine`` on the upload loop and wait for it (botocore bounds each
        request; ``timeout_s`` bounds the whole)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout_s)

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        # the resolver's threads (getaddrinfo runs in the loop's default executor)
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _key(self, name: str) -> S3Url:
        return self._track.join(name)

    async def _start(self) -> None:
        try:
            self._client = await self._stack.enter_async_context(open_client(self._settings))
            await self._prepare()
        except StoreError as exc:
            await self._stack.aclose()
            raise from_store(exc) from exc
        except BaseException:
            await self._stack.aclose()
            raise
        self._queue = asyncio.Queue(self._max_pending)
        self._gate = asyncio.Semaphore(max(1, self._settings.concurrency))
        self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _prepare(self) -> None:
        keys = await S3Uploader(self._client, self._settings).existing_keys(self._track)
        if self._key(PRESENTATION_NAME).key in keys:
            raise OutputError(self.location, "holds a packaged track; choose another --track-id")
        if self._key(LIVE_STATE_NAME).key in keys:  # a previous live stream: start afresh
            log.info("%s: removing a previous live stream's %d objects", self.location, len(keys))
            await self._delete_keys(sorted(keys))

    async def _drain(self) -> None:
        assert self._queue is not None
        while (handed := await self._queue.get()) is not None:
            if self._failure is not None:
                continue  # failed: the rest is dropped, so the publisher never waits
            started, batch = handed
            try:
                await self._send(batch)
                self.delays_s.append(time.monotonic() - started)
            except StoreError as exc:
                self._failure = from_store(exc)
            except PackagerError as exc:
                self._failure = exc
            except Exception as exc:  # an unexpected error stops the stream too
                self._failure = StorageError(self.location, f"upload failed: {exc!r}")

    async def _send(self, batch: _Batch) -> None:
        puts = [op for op in batch if isinstance(op, _Put)]
        deletes = [self._key(op.name).key for op in batch if isinstance(op, _Delete)]
        await gather_all(self._put(op) for op in puts)
        if deletes:
            await self._delete_keys(deletes)

    async def _put(self, op: _Put) -> None:
        url = self._key(op.name)
        assert self._gate is not None
        cache = "no-cache" if is_manifest(op.name) else cache_control_for(op.name)
        async with self._gate:
            try:
                await self._client.put_object(
                    Bucket=url.bucket,
                    Key=url.key,
                    Body=op.data,
                    ContentType=content_type_for(op.name),
                    CacheControl=cache,
                )
            except s3_errors() as exc:
                raise request_failed(url, "upload", exc) from exc
        self.sent_bytes += len(op.data)
        self.requests += 1

    async def _delete_keys(self, keys: list[str]) -> None:
        bucket = self._track.bucket
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            try:
                answer = await self._client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            except s3_errors() as exc:
                raise request_failed(self._track, "removing old objects", exc) from exc
            self.requests += 1
            # DeleteObjects answers 200 even when some keys were not deleted.
            if failed := answer.get("Errors"):
                error = failed[0]
                raise StorageError(
                    f"s3://{bucket}/{error.get('Key', '?')}",
                    f"could not delete {len(failed)} object(s): {error.get('Code', '?')}",
                )

    async def _finish(self) -> None:
        """Every batch sent (or dropped after a failure), then the client closed."""
        assert self._queue is not None and self._worker is not None
        await self._queue.put(None)
        await self._worker
        await self._stack.aclose()

    async def _shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._stack.aclose()
