"""Uploading a finished track folder to S3, in the order that keeps readers safe:

1. media and init segments, concurrently (at most ``concurrency`` requests);
2. the media playlists; 3. the MPD and master playlist;
4. ``presentation.json`` last: its presence marks a complete track on S3, as it
   does in a local folder.

Nothing is deleted first. A republished track's rendition files carry a new version
tag (:attr:`cadenza.manifests.model.Rendition.name_tag`), so steps 1 and 2 add
objects beside the published ones and change none of them; only the track's three
fixed names (MPD, master playlist, ``presentation.json``) are replaced, once the new
set is whole. The earlier set stays until ``cadenza gc`` removes it.

If any step of a track's first upload fails, the manifests it put are deleted again
(best effort), so a failed track is never visible. A republish that fails is left as
it stopped: the published track as it was, or (past step 3) its MPD and master
playlist already naming the new set, which is whole; a re-run finishes the switch.

Each object gets the ``Content-Type`` and ``Cache-Control`` the origin serves it with
(:mod:`cadenza.manifests.media_types`).  Files of ``multipart_threshold_bytes`` or more
go up as explicit multipart uploads (create, parts in parallel, complete; aborted on
failure) rather than aioboto3's managed transfer, which reads ahead without bound.
Retries are the client's (:mod:`cadenza.store.s3client`); whatever still fails is a
:class:`~cadenza.store.errors.RequestFailedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from cadenza.manifests.media_types import cache_control_for, content_type_for, is_manifest
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PRESENTATION_NAME
from cadenza.store.atomic import oserror_reason
from cadenza.store.errors import LocalFileError, NotATrackError, RequestFailedError
from cadenza.store.s3client import S3Settings, gather_all, request_failed, s3_errors
from cadenza.store.s3url import S3Url

DELETE_BATCH: Final = 1000  # the most keys one DeleteObjects request takes


def _read(path: Path, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)
    except OSError as exc:
        raise LocalFileError(str(path), f"cannot read for upload: {oserror_reason(exc)}") from exc


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
        raise NotATrackError(
            str(folder), f"not a packaged track: expected {PRESENTATION_NAME} at its top"
        )
    return [phase for phase in phases if phase]


class S3Uploader:
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
            raise LocalFileError(
                str(path), f"cannot read for upload: {oserror_reason(exc)}"
            ) from exc
        try:
            if size >= self.settings.multipart_threshold_bytes:
                await self._multipart(path, size, url)
            else:
                async with self.gate:  # at most `concurrency` bodies in memory at once
                    body = _read(path, 0, size)
                    await self.client.put_object(
                        Bucket=url.bucket, Key=url.key, Body=body, **self._headers(url.key)
                    )
        except s3_errors() as exc:
            raise request_failed(url, "upload", exc) from exc

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
            parts = await gather_all(part(n) for n in range(1, -(-size // part_size) + 1))
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
            for start in range(0, len(group), DELETE_BATCH):
                chunk = group[start : start + DELETE_BATCH]
                answer = await self.client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
                # DeleteObjects answers 200 even when some keys were not deleted.
                if failed := answer.get("Errors"):
                    error = failed[0]
                    why = f"{error.get('Code', '?')} {error.get('Message', '')}".strip()
                    raise RequestFailedError(
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
        except s3_errors() as exc:
            raise request_failed(track, "removing the old manifests", exc) from exc

    async def existing_keys(self, track: S3Url) -> set[str]:
        keys: set[str] = set()
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=track.bucket, Prefix=track.key + "/"):
                keys |= {str(o["Key"]) for o in page.get("Contents", [])}
        except s3_errors() as exc:
            raise request_failed(track, "listing the track", exc) from exc
        return keys

    async def upload_track(self, folder: Path, track: S3Url) -> int:
        """Upload a packaged track folder to ``track`` (its prefix); returns the bytes sent."""
        phases = upload_plan(folder)
        before = await self.existing_keys(track)
        sent = 0
        # A first upload that fails is hidden again: the manifests it put are deleted.
        # A republish that fails is left as it stopped: every manifest it replaced names
        # only objects already in place, which deleting would break.
        first = track.join(PRESENTATION_NAME).key not in before
        manifests = [
            key
            for phase in phases
            for f in phase
            if first and is_manifest(f) and (key := track.join(f).key) not in before
        ]
        try:
            for phase in phases:
                await gather_all(self.put_file(folder / f, track.join(f)) for f in phase)
                sent += sum((folder / f).stat().st_size for f in phase)
        except Exception:
            with contextlib.suppress(Exception):
                await self.delete_manifests(track.bucket, manifests)
            raise
        return sent
