"""What the packager's re-runs and ``cadenza gc`` ask of S3 beyond uploads: the files a
track holds (with their modification times), one object's bytes, and deleting keys.

Blocking and picklable like :class:`~cadenza.store.s3write.S3TrackWriter` (a root and
settings; each call opens its own client). Failures are
:class:`~cadenza.store.errors.RequestFailedError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cadenza.store.complete import is_track_name, presentation_key
from cadenza.store.errors import RequestFailedError
from cadenza.store.s3client import S3Settings, is_not_found, open_client, request_failed, s3_errors
from cadenza.store.s3upload import DELETE_BATCH
from cadenza.store.s3url import S3Url

# A track's files: relative POSIX name below the track -> modification time (Unix s).
TrackFiles = dict[str, float]


async def _list(client: Any, prefix: S3Url) -> dict[str, float]:
    """Every key below ``prefix`` (relative to it) with its LastModified."""
    found: dict[str, float] = {}
    try:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.listing_prefix):
            for item in page.get("Contents", []):
                found[prefix.relative(str(item["Key"]))] = item["LastModified"].timestamp()
    except s3_errors() as exc:
        raise request_failed(prefix, "listing", exc) from exc
    return found


async def get_object_dated_or_none(
    client: Any, url: S3Url, doing: str = "reading"
) -> tuple[bytes, float] | None:
    """The object's bytes and its modification time (seconds), or None when it does
    not exist; any other failure is a :class:`RequestFailedError` saying what was being
    done."""
    try:
        response = await client.get_object(Bucket=url.bucket, Key=url.key)
        async with response["Body"] as body:
            data: bytes = await body.read()
    except s3_errors() as exc:
        if is_not_found(exc):
            return None
        raise request_failed(url, doing, exc) from exc
    return data, float(response["LastModified"].timestamp())


async def get_object_or_none(client: Any, url: S3Url, doing: str = "reading") -> bytes | None:
    """:func:`get_object_dated_or_none` without the date."""
    found = await get_object_dated_or_none(client, url, doing)
    return None if found is None else found[0]


@dataclass(frozen=True, slots=True)
class S3Sweeper:
    root: S3Url
    settings: S3Settings = field(default_factory=S3Settings)

    def files(self, track_id: str) -> TrackFiles:
        """A track's files (every key below ``root/<track_id>/``)."""

        async def run() -> TrackFiles:
            async with open_client(self.settings) as client:
                return await _list(client, self.root.join(track_id))

        return asyncio.run(run())

    def presentation(self, track_id: str) -> bytes | None:
        """A track's ``presentation.json`` (None: there is none)."""

        async def run() -> bytes | None:
            async with open_client(self.settings) as client:
                return await get_object_or_none(client, self.root.join(presentation_key(track_id)))

        return asyncio.run(run())

    def tracks(self) -> dict[str, TrackFiles]:
        """Every track folder below the root (hidden ones never) and its files."""

        async def run() -> dict[str, TrackFiles]:
            async with open_client(self.settings) as client:
                listed = await _list(client, self.root)
            by_track: dict[str, TrackFiles] = {}
            for name, mtime_s in listed.items():
                track, slash, rest = name.partition("/")
                if slash and rest and is_track_name(track):
                    by_track.setdefault(track, {})[rest] = mtime_s
            return by_track

        return asyncio.run(run())

    def read(self, track_id: str, name: str) -> bytes | None:
        async def run() -> bytes | None:
            async with open_client(self.settings) as client:
                return await get_object_or_none(client, self.root.join(track_id, name))

        return asyncio.run(run())

    def delete(self, track_id: str, names: Sequence[str]) -> None:
        """Delete the track's files ``names``; raises for any S3 did not delete."""

        async def run() -> None:
            keys = [self.root.join(track_id, n).key for n in names]
            async with open_client(self.settings) as client:
                for start in range(0, len(keys), DELETE_BATCH):
                    chunk = keys[start : start + DELETE_BATCH]
                    try:
                        answer = await client.delete_objects(
                            Bucket=self.root.bucket,
                            Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                        )
                    except s3_errors() as exc:
                        raise request_failed(self.root.join(track_id), "deleting", exc) from exc
                    if failed := answer.get("Errors"):
                        error = failed[0]
                        raise RequestFailedError(
                            f"s3://{self.root.bucket}/{error.get('Key', '?')}",
                            f"could not delete: {error.get('Code', '?')}",
                        )

        asyncio.run(run())
