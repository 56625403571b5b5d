"""S3 for the packager: ``s3://`` inputs downloaded, finished tracks uploaded.

A track is packaged into a local staging folder first (the same atomic local
path as ``--out DIR``), then uploaded in the order that keeps readers safe:

1. the track's old manifests are deleted, ``presentation.json`` first, so a
   track being replaced or retried is not "complete" while its media changes;
2. media and init segments, concurrently (at most ``concurrency`` requests);
3. the media playlists; 4. the MPD and master playlist;
5. ``presentation.json`` last: its presence marks a complete track on S3,
   as it does in a local folder.

If any step fails, the manifests this attempt uploaded are deleted again
(best effort), so a failed track is never visible; its segments stay, and are
overwritten by the next attempt.

Each object gets the ``Content-Type`` and ``Cache-Control`` the origin serves
it with (:mod:`cadenza.manifests.media_types`).  Files of ``multipart_threshold_bytes``
or more go up as explicit multipart uploads (create, parts in parallel,
complete; aborted on failure) rather than aioboto3's managed transfer, which
reads ahead without bound.  Throttling, 5xx answers and connection errors are
retried by botocore's ``standard`` retry mode, configured here explicitly:
``max_attempts`` tries per request with exponential backoff and full jitter
(``rand(0, 1) * min(2 ** attempt, 20)`` seconds).  Whatever still fails is
mapped here, at the boundary, to :class:`StorageError`.

aioboto3 is imported only inside the functions that talk to S3: packaging to a
local folder never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Final, TypeVar

from cadenza.manifests.errors import ManifestError
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.media_types import (
    DEFAULT_MANIFEST_MAX_AGE_S,
    DEFAULT_SEGMENT_MAX_AGE_S,
    cache_control_for,
    content_type_for,
    is_manifest,
)
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PRESENTATION_NAME
from cadenza.packager.errors import InputError, OutputError, StorageError
from cadenza.packager.output import oserror_reason

T = TypeVar("T")
MIB: Final = 1024 * 1024
MIN_PART_BYTES: Final = 5 * MIB  # S3's smallest part (all but the last)
DOWNLOAD_CHUNK: Final = MIB
_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True, slots=True)
class S3Url:
    """``s3://bucket/key``; for a prefix, ``key`` has no slash at either end ("" = the bucket)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def join(self, *parts: str) -> S3Url:
        return S3Url(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p))


def is_s3_url(text: str) -> bool:
    return text[:5].lower() == "s3://"


def parse_s3_url(text: str, *, prefix: bool) -> S3Url:
    """An object URL (``prefix=False``: the key must name an object, not a folder)
    or a prefix URL (``prefix=True``). Raises ValueError with the reason."""
    if not is_s3_url(text):
        raise ValueError(f"{text!r} is not an s3:// URL")
    bucket, _, key = text[5:].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(
            f"{text!r}: {bucket!r} is not a bucket name (3-63 of a-z 0-9 . -, "
            "starting and ending with a letter or digit)"
        )
    if prefix:
        return S3Url(bucket, key.strip("/"))
    if not key or key.endswith("/"):
        raise ValueError(f"{text!r} names a folder, not an object: give the object's key")
    return S3Url(bucket, key)


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How the packager talks to S3. Picklable: it travels to Dask workers."""

    endpoint_url: str | None = None  # AWS_ENDPOINT_URL, e.g. MinIO or a moto server
    max_attempts: int = 5  # per request, the first included (botocore "standard" mode)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    concurrency: int = 8  # requests in flight per track
    multipart_threshold_bytes: int = 16 * MIB
    part_size_bytes: int = 8 * MIB
    manifest_max_age_s: int = DEFAULT_MANIFEST_MAX_AGE_S
    segment_max_age_s: int = DEFAULT_SEGMENT_MAX_AGE_S


@asynccontextmanager
async def open_client(settings: S3Settings) -> AsyncIterator[Any]:
    import aioboto3
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        # total_max_attempts counts the first try too (botocore's max_attempts would not).
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        max_pool_connections=max(10, settings.concurrency),
    )
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=settings.endpoint_url, config=config) as client:
        yield client


def _s3_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, OSError, TimeoutError)


def _error_code(exc: BaseException) -> tuple[str, int]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_not_found(exc: BaseException) -> bool:
    code, status = _error_code(exc)
    return code in _NOT_FOUND or status == 404


def storage_error(url: S3Url | str, action: str, exc: BaseException) -> StorageError:
    """botocore's error (or a transport error) as a :class:`StorageError` naming the URL."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code, status = _error_code(exc)
        tries = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) + 1
        reason = f"{action} failed: {code or 'error'}"
        if status:
            reason += f" (HTTP {status})"
        if tries > 1:
            reason += f" after {tries} attempts"
    else:
        detail = str(exc) or type(exc).__name__
        reason = f"{action} failed: S3 unreachable ({type(exc).__name__}: {detail})"
    return StorageError(str(url), reason)


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _read(path: Path, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)
    except OSError as exc:
        raise OutputError(path, f"cannot read for upload: {oserror_reason(exc)}") from exc


def upload_plan(folder: Path) -> list[list[str]]:
    """The track folder's files (relative POSIX paths) in upload phases: media and
    init segments, media playlists, MPD and master playlist, presentation.json."""
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    top = {MPD_NAME, MASTER_NAME}
    phases = [
        [f for f in files if not is_manifest(f)],
        [f for f in files if is_manifest(f) and "/" in f],
        [f for f in files if f in top],
        [f for f in files if is_manifest(f) and "/" not in f and f not in top],
    ]
    if phases[3] != [PRESENTATION_NAME]:
        raise OutputError(folder, f"not a packaged track: expected {PRESENTATION_NAME} at its top")
    return [phase for phase in phases if phase]


class Uploader:
    """Uploads one track's folder through an open client; see the module docstring."""

    def __init__(self, client: Any, settings: S3Settings) -> None:
        self.client = client
        self.settings = settings
        self.gate = asyncio.Semaphore(max(1, settings.concurrency))

    def _headers(self, key: str) -> dict[str, str]:
        return {
            "ContentType": content_type_for(key),
            "CacheControl": cache_control_for(
                key,
                manifest_max_age_s=self.settings.manifest_max_age_s,
                segment_max_age_s=self.settings.segment_max_age_s,
            ),
        }

    async def put_file(self, path: Path, url: S3Url) -> None:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise OutputError(path, f"cannot read for upload: {oserror_reason(exc)}") from exc
        try:
            if size >= self.settings.multipart_threshold_bytes:
                await self._multipart(path, size, url)
            else:
                async with self.gate:  # at most `concurrency` bodies in memory at once
                    body = _read(path, 0, size)
                    await self.client.put_object(
                        Bucket=url.bucket, Key=url.key, Body=body, **self._headers(url.key)
                    )
        except _s3_errors() as exc:
            raise storage_error(url, "upload", exc) from exc

    async def _multipart(self, path: Path, size: int, url: S3Url) -> None:
        part_size = max(1, self.settings.part_size_bytes)
        # Each part carries a CRC32 that S3 checks, and the completion repeats them.
        created = await self.client.create_multipart_upload(
            Bucket=url.bucket, Key=url.key, ChecksumAlgorithm="CRC32", **self._headers(url.key)
        )
        upload_id = created["UploadId"]

        async def part(number: int) -> dict[str, Any]:
            offset = (number - 1) * part_size
            async with self.gate:  # at most `concurrency` parts in memory at once
                body = _read(path, offset, min(part_size, size - offset))
                response = await self.client.upload_part(
                    Bucket=url.bucket,
                    Key=url.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm="CRC32",
                )
            done: dict[str, Any] = {"ETag": response["ETag"], "PartNumber": number}
            if "ChecksumCRC32" in response:
                done["ChecksumCRC32"] = response["ChecksumCRC32"]
            return done

        try:
            parts = await _all(part(n) for n in range(1, -(-size // part_size) + 1))
            await self.client.complete_multipart_upload(
                Bucket=url.bucket,
                Key=url.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.client.abort_multipart_upload(
                    Bucket=url.bucket, Key=url.key, UploadId=upload_id
                )
            raise

    async def delete_manifests(self, bucket: str, keys: Sequence[str]) -> None:
        """Delete manifest keys, every ``presentation.json`` before anything else."""
        first = [k for k in keys if k.rsplit("/", 1)[-1] == PRESENTATION_NAME]
        rest = [k for k in keys if k not in first]
        for group in (first, rest):
            for start in range(0, len(group), 1000):
                chunk = group[start : start + 1000]
                if chunk:
                    answer = await self.client.delete_objects(
                        Bucket=bucket,
                        Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                    )
                    # DeleteObjects answers 200 even when some keys were not deleted.
                    if failed := answer.get("Errors"):
                        error = failed[0]
                        why = f"{error.get('Code', '?')} {error.get('Message', '')}".strip()
                        raise StorageError(
                            f"s3://{bucket}/{error.get('Key', '?')}",
                            f"could not delete {len(failed)} manifest(s): {why}",
                        )

    async def hide(self, track: S3Url) -> None:
        """Delete the manifests already under the track's prefix (an earlier attempt's,
        or the copy being replaced), presentation.json first."""
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=track.bucket, Prefix=track.key + "/"):
                keys += [str(o["Key"]) for o in page.get("Contents", []) if is_manifest(o["Key"])]
            await self.delete_manifests(track.bucket, keys)
        except _s3_errors() as exc:
            raise storage_error(track, "removing the old manifests", exc) from exc

    async def upload_track(self, folder: Path, track: S3Url) -> int:
        """Upload a packaged track folder to ``track`` (its prefix); returns the bytes sent."""
        phases = upload_plan(folder)
        await self.hide(track)
        sent = 0
        manifests = [track.join(f).key for phase in phases for f in phase if is_manifest(f)]
        try:
            for phase in phases:
                await _all(self.put_file(folder / f, track.join(f)) for f in phase)
                sent += sum((folder / f).stat().st_size for f in phase)
        except Exception:
            with contextlib.suppress(Exception):
                await self.delete_manifests(track.bucket, manifests)
            raise
        return sent


async def upload_track(folder: Path, track: S3Url, settings: S3Settings) -> int:
    async with open_client(settings) as client:
        return await Uploader(client, settings).upload_track(folder, track)


async def read_complete(root: S3Url, track_ids: Sequence[str], settings: S3Settings) -> set[str]:
    """The track ids whose ``presentation.json`` exists below ``root`` and parses."""
    from botocore.exceptions import ClientError

    async with open_client(settings) as client:
        gate = asyncio.Semaphore(max(1, settings.concurrency * 2))

        async def one(track_id: str) -> str | None:
            url = root.join(track_id, PRESENTATION_NAME)
            async with gate:
                try:
                    response = await client.get_object(Bucket=url.bucket, Key=url.key)
                    async with response["Body"] as body:
                        data = await body.read()
                except ClientError as exc:
                    if _is_not_found(exc):
                        return None
                    raise storage_error(url, "checking for a finished track", exc) from exc
                except _s3_errors() as exc:
                    raise storage_error(url, "checking for a finished track", exc) from exc
            try:
                presentation_from_json(data)
            except ManifestError:
                return None
            return track_id

        found = await _all(one(t) for t in track_ids)
    return {t for t in found if t is not None}


async def download(url: S3Url, dest: Path, settings: S3Settings) -> None:
    """Copy one object to a local file (PyAV reads files, not streams)."""
    async with open_client(settings) as client:
        try:
            response = await client.get_object(Bucket=url.bucket, Key=url.key)
        except _s3_errors() as exc:
            if _is_not_found(exc):
                raise InputError(str(url), "no such object in S3") from None
            raise storage_error(url, "download", exc) from exc
        try:
            handle = open(dest, "wb")  # noqa: SIM115 -- closed below, with the stream
        except OSError as exc:
            raise OutputError(dest, f"cannot write a download: {oserror_reason(exc)}") from exc
        body = response["Body"]  # aiobotocore's StreamingBody
        with handle:
            try:
                while True:
                    try:
                        chunk = await body.read(DOWNLOAD_CHUNK)
                    except Exception as exc:  # botocore or aiohttp: the stream broke
                        raise storage_error(url, "download", exc) from exc
                    if not chunk:
                        break
                    try:
                        handle.write(chunk)
                    except OSError as exc:
                        raise OutputError(dest, f"cannot write: {oserror_reason(exc)}") from exc
            finally:
                body.close()


async def put_bytes(url: S3Url, body: bytes, content_type: str, settings: S3Settings) -> None:
    async with open_client(settings) as client:
        try:
            await client.put_object(
                Bucket=url.bucket,
                Key=url.key,
                Body=body,
                ContentType=content_type,
                CacheControl="no-cache",
            )
        except _s3_errors() as exc:
            raise storage_error(url, "upload", exc) from exc


async def check_bucket(root: S3Url, settings: S3Settings) -> None:
    async with open_client(settings) as client:
        try:
            await client.head_bucket(Bucket=root.bucket)
        except _s3_errors() as exc:
            raise storage_error(f"s3://{root.bucket}", "opening the bucket", exc) from exc


def fetch(url: str, folder: Path, settings: S3Settings) -> Path:
    """Download ``s3://…`` into ``folder`` under the object's own file name."""
    parsed = parse_s3_url(url, prefix=False)
    dest = folder / (PurePosixPath(parsed.key).name or "source")
    asyncio.run(download(parsed, dest, settings))
    return dest


@dataclass(frozen=True, slots=True)
class S3Destination:
    """Tracks go to ``root/<track_id>/``, staged locally first (see the module docstring)."""

    root: S3Url
    settings: S3Settings = S3Settings()
    staged: ClassVar[bool] = True

    def location(self, track_id: str) -> str:
        return str(self.root.join(track_id))

    def complete(self, track_ids: Sequence[str]) -> set[str]:
        if not track_ids:
            return set()
        return asyncio.run(read_complete(self.root, track_ids, self.settings))

    def publish(self, folder: Path, track_id: str) -> int:
        return asyncio.run(upload_track(folder, self.root.join(track_id), self.settings))

    def check(self) -> None:
        asyncio.run(check_bucket(self.root, self.settings))

    def put_report(self, path: Path, name: str) -> str:
        """Upload the batch report under the prefix's hidden ``.cadenza/`` folder (which
        the origin never serves); returns its URL."""
        url = self.root.join(".cadenza", name)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise OutputError(path, f"cannot read: {oserror_reason(exc)}") from exc
        asyncio.run(put_bytes(url, body, "application/json", self.settings))
        return str(url)
