"""The source files a just-in-time origin serves as tracks: a local folder, or an
``s3://bucket/prefix`` whose objects are downloaded once into a bounded local cache.

A source's track id is its file's stem reduced as the batch packager reduces it
(:func:`cadenza.packager.output.track_id_for`); files the packager would not read
(hidden names, names without a suffix) are not sources.  The listing is kept for
``listing_ttl_s``; a known id is checked with one ``stat`` on every lookup, so a
deleted source disappears at once and a new one appears within the TTL.

Blocking: the just-in-time store calls these from worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cadenza.packager.output import track_id_for
from cadenza.store.atomic import oserror_reason
from cadenza.store.errors import StoreError
from cadenza.store.s3client import S3Settings, open_client, request_failed, s3_errors
from cadenza.store.s3url import S3Url, parse_s3_url
from cadenza.store.s3write import download

# What the packager reads (PyAV opens any of these); anything else in the folder is
# not a source (a README, a cover image).
MEDIA_SUFFIXES: Final = frozenset(
    {".flac", ".wav", ".wave", ".aif", ".aiff", ".mp3", ".m4a", ".mp4", ".aac", ".ogg",
     ".opus", ".oga", ".wv", ".ape", ".mka", ".caf", ".w64", ".alac"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A source as found: its local path (a downloaded copy for S3), the location the
    fingerprint records (a path or an ``s3://`` URL) and what identifies this version
    of it cheaply (size and mtime in ns locally, the ETag for S3)."""

    track_id: str
    path: Path
    given: str
    version: tuple[int, int] | str

    @property
    def name(self) -> str:
        return self.given.rstrip("/").rsplit("/", 1)[-1]


class SourceError(Exception):
    """A sources folder or bucket that cannot be listed or read."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class Sources(Protocol):
    location: str

    def locate(self, track_id: str) -> SourceFile | None: ...

    def track_ids(self) -> list[str]: ...


def is_media_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in MEDIA_SUFFIXES


class LocalSources:
    """Files directly inside ``folder``; of two files with one id, the first by name."""

    def __init__(
        self, folder: Path, listing_ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder = folder
        self.location = str(folder)
        self._ttl_s = listing_ttl_s
        self._clock = clock
        self._listing: dict[str, Path] = {}
        self._listed_at: float | None = None
        self._lock = threading.Lock()
        self.listings = 0  # how many times the folder was read (tests)

    def _listed(self) -> dict[str, Path]:
        with self._lock:
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= self._ttl_s:
                self._listing = self._read_folder()
                self._listed_at = now
                self.listings += 1
            return self._listing

    def _read_folder(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        try:
            names = sorted(os.listdir(self.folder))
        except OSError as exc:
            raise SourceError(self.location, f"cannot list: {oserror_reason(exc)}") from exc
        for name in names:
            if is_media_name(name):
                found.setdefault(track_id_for(Path(name)), self.folder / name)
        return found

    def _refresh(self) -> None:
        with self._lock:
            self._listed_at = None

    def locate(self, track_id: str) -> SourceFile | None:
        path = self._listed().get(track_id)
        if path is None:
            return None
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._refresh()  # gone since the listing: read the folder again next time
            return None
        except OSError as exc:
            raise SourceError(path.name, f"cannot stat: {oserror_reason(exc)}") from exc
        return SourceFile(track_id, path, str(path), (stat.st_size, stat.st_mtime_ns))

    def track_ids(self) -> list[str]:
        return sorted(self._listed())


class S3Sources:
    """Objects directly below ``s3://bucket/prefix/``; each version (ETag) is downloaded
    once into ``cache_dir``, which is kept under ``cache_max_bytes`` by removing the
    least recently used copies."""

    def __init__(
        self,
        url: str,
        settings: S3Settings,
        *,
        cache_dir: Path,
        cache_max_bytes: int,
        listing_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root: S3Url = parse_s3_url(url, prefix=True)
        self.location = url
        self._settings = settings
        self._cache_dir = cache_dir
        self._cache_max_bytes = cache_max_bytes
        self._ttl_s = listing_ttl_s
        self._clock = clock
        self._listing: dict[str, tuple[str, str]] = {}  # id -> (key name, etag)
        self._listed_at: float | None = None
        self._lock = threading.Lock()
        self._download_lock = threading.Lock()
        self.downloads = 0  # objects fetched (tests: each version once)

    def _listed(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= self._ttl_s:
                self._listing = asyncio.run(self._list())
                self._listed_at = now
            return self._listing

    async def _list(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        try:
            async with open_client(self._settings) as client:
                paginator = client.get_paginator("list_objects_v2")
                pages = paginator.paginate(
                    Bucket=self.root.bucket, Prefix=self.root.listing_prefix, Delimiter="/"
                )
                items = [item async for page in pages for item in page.get("Contents", [])]
        except s3_errors() as exc:
            failed = request_failed(self.root, "listing", exc)
            raise SourceError(self.location, failed.reason) from exc
        for item in sorted(items, key=lambda i: str(i["Key"])):
            name = self.root.relative(str(item["Key"]))
            if "/" not in name and is_media_name(name):
                etag = str(item.get("ETag", "")).strip('"')
                found.setdefault(track_id_for(Path(name)), (name, etag))
        return found

    def locate(self, track_id: str) -> SourceFile | None:
        entry = self._listed().get(track_id)
        if entry is None:
            return None
        name, etag = entry
        digest = hashlib.sha256(f"{self.root.bucket}/{self.root.key}/{name}".encode()).hexdigest()
        local = self._cache_dir / f"{digest[:16]}-{etag}{Path(name).suffix.lower()}"
        with self._download_lock:
            if local.exists():
                with contextlib.suppress(OSError):
                    os.utime(local)  # recently used: kept longest
            else:
                self._fetch(self.root.join(name), local)
        return SourceFile(track_id, local, str(self.root.join(name)), etag)

    def _fetch(self, url: S3Url, local: Path) -> None:
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(str(self._cache_dir), oserror_reason(exc)) from exc
        partial = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            asyncio.run(download(url, partial, self._settings))
            os.replace(partial, local)
        except StoreError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise SourceError(str(url), str(exc)) from exc
        self.downloads += 1
        self._trim(keep=local)

    def _trim(self, keep: Path) -> None:
        """Remove the least recently used copies until the cache fits its bound."""
        copies = []
        for entry in self._cache_dir.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_file() and not entry.name.startswith("."):
                    stat = entry.stat()
                    copies.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in copies)
        for _, size, entry in sorted(copies):
            if total <= self._cache_max_bytes:
                break
            if entry != keep:
                with contextlib.suppress(OSError):
                    entry.unlink()
                    total -= size

    def track_ids(self) -> list[str]:
        return sorted(self._listed())
