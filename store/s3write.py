"""The S3 write face: tracks go to ``root/<track_id>/`` in the upload order of
:mod:`cadenza.store.s3upload`, plus the single objects the packager reads and writes
(a source to download, a batch report to put).

:class:`S3TrackWriter` is blocking and picklable (a root and settings), so it travels
to forked children and Dask workers; each call opens its own client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cadenza.store.atomic import oserror_reason
from cadenza.store.errors import LocalFileError, RequestFailedError
from cadenza.store.s3client import S3Settings, is_not_found, open_client, request_failed, s3_errors
from cadenza.store.s3read import read_completion_markers
from cadenza.store.s3upload import S3Uploader
from cadenza.store.s3url import S3Url

DOWNLOAD_CHUNK_BYTES: Final = 1024 * 1024


async def upload_track(folder: Path, track: S3Url, settings: S3Settings) -> int:
    async with open_client(settings) as client:
        return await S3Uploader(client, settings).upload_track(folder, track)


async def hide_track(track: S3Url, settings: S3Settings) -> None:
    async with open_client(settings) as client:
        await S3Uploader(client, settings).hide(track)


async def complete_tracks(root: S3Url, track_ids: Sequence[str], settings: S3Settings) -> set[str]:
    async with open_client(settings) as client:
        return await read_completion_markers(client, root, track_ids, settings.concurrency * 2)


async def download(url: S3Url, dest: Path, settings: S3Settings) -> None:
    """Copy one object to a local file.  A missing object is a :class:`RequestFailedError`
    with ``not_found`` set and the reason ``no such object in S3``."""
    async with open_client(settings) as client:
        try:
            response = await client.get_object(Bucket=url.bucket, Key=url.key)
        except s3_errors() as exc:
            if is_not_found(exc):
                raise RequestFailedError(str(url), "no such object in S3", not_found=True) from None
            raise request_failed(url, "download", exc) from exc
        try:
            handle = open(dest, "wb")  # noqa: SIM115 -- closed below, with the stream
        except OSError as exc:
            raise LocalFileError(
                str(dest), f"cannot write a download: {oserror_reason(exc)}"
            ) from exc
        body = response["Body"]  # aiobotocore's StreamingBody
        with handle:
            try:
                while True:
                    try:
                        chunk = await body.read(DOWNLOAD_CHUNK_BYTES)
                    except Exception as exc:  # botocore or aiohttp: the stream broke
                        raise request_failed(url, "download", exc) from exc
                    if not chunk:
                        break
                    try:
                        handle.write(chunk)
                    except OSError as exc:
                        raise LocalFileError(
                            str(dest), f"cannot write: {oserror_reason(exc)}"
                        ) from exc
            finally:
                body.close()


async def put_object(url: S3Url, body: bytes, content_type: str, settings: S3Settings) -> None:
    """One object that changes whenever it is rewritten (``Cache-Control: no-cache``)."""
    async with open_client(settings) as client:
        try:
            await client.put_object(
                Bucket=url.bucket,
                Key=url.key,
                Body=body,
                ContentType=content_type,
                CacheControl="no-cache",
            )
        except s3_errors() as exc:
            raise request_failed(url, "upload", exc) from exc


async def check_bucket(root: S3Url, settings: S3Settings) -> None:
    async with open_client(settings) as client:
        try:
            await client.head_bucket(Bucket=root.bucket)
        except s3_errors() as exc:
            raise request_failed(f"s3://{root.bucket}", "opening the bucket", exc) from exc


@dataclass(frozen=True, slots=True)
class S3TrackWriter:
    """The write face over ``root`` (see :class:`cadenza.store.api.TrackWriter`)."""

    root: S3Url
    settings: S3Settings = field(default_factory=S3Settings)

    def location(self, track_id: str) -> str:
        return str(self.root.join(track_id))

    def complete(self, track_ids: Sequence[str]) -> set[str]:
        if not track_ids:
            return set()
        return asyncio.run(complete_tracks(self.root, track_ids, self.settings))

    def put_track(self, folder: Path, track_id: str) -> int:
        return asyncio.run(upload_track(folder, self.root.join(track_id), self.settings))

    def delete_track(self, track_id: str) -> None:
        """Hide the track: its manifests go, presentation.json first; segments stay (a
        later packaging writes version-tagged names beside them, and ``cadenza gc``
        removes them after that packaging's grace period)."""
        asyncio.run(hide_track(self.root.join(track_id), self.settings))

    def check(self) -> None:
        asyncio.run(check_bucket(self.root, self.settings))

    def put_object(self, key: str, body: bytes, content_type: str) -> str:
        """Put ``body`` at ``root/key``; returns its URL."""
        url = self.root.join(key)
        asyncio.run(put_object(url, body, content_type, self.settings))
        return str(url)
