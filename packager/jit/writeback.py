"""The write-back area of just-in-time tracks, and each track's lineage.

Layout, below a folder the packaged tree never uses (``ROOT/.jit`` by default: a
hidden folder, which no origin URL can name, ``cadenza package`` never clears and
``cadenza gc`` never enters)::

    <folder>/<track_id>/lineage.json                       which build owns which tag
    <folder>/<track_id>/<build>/<rendition>/<file name>    built init and media segments

``<build>`` is the first 12 hex digits of a *build key*: the SHA-256 of the track's
fingerprint without the source's location (the source's bytes, the ladder, the segment
duration, the options and the cadenza version), so one build key is one set of bytes.

The lineage makes published URLs immutable.  The first build of a track gets the
untagged names (``init.mp4``, ``seg-00001.m4s``: what the batch packager's first
publication writes); each later build key (the source replaced, or the ladder changed)
gets a fresh version tag (:func:`cadenza.packager.fingerprint.new_name_tag`), so an old
URL never serves other bytes.  The file is changed under an exclusive ``flock``, so
processes sharing the folder agree.  Files are written atomically (a temporary file,
``fsync``, ``rename``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cadenza.manifests.fingerprint import Fingerprint, fingerprint_to_dict
from cadenza.manifests.media_types import content_type_for
from cadenza.packager.fingerprint import new_name_tag
from cadenza.store.atomic import oserror_reason, write_atomic
from cadenza.store.errors import LocalFileError
from cadenza.store.s3client import S3Settings, open_client
from cadenza.store.s3sweep import get_object_dated_or_none
from cadenza.store.s3url import S3Url
from cadenza.store.s3write import put_object

LINEAGE_NAME: Final = "lineage.json"
BUILD_DIGITS: Final = 12
_NOT_BUILD_INPUTS: Final = frozenset({"source_location", "source_location_sha256", "source_name"})


def build_key(fingerprint: Fingerprint) -> str:
    """What the built bytes depend on, as a hex digest (see the module docstring)."""
    fields = {
        k: v for k, v in fingerprint_to_dict(fingerprint).items() if k not in _NOT_BUILD_INPUTS
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LineageEntry:
    build: str  # build key
    tag: str  # the names' version tag ("": the plain names)
    source_name: str
    source_sha256: str


@dataclass(frozen=True, slots=True)
class Lineage:
    entries: tuple[LineageEntry, ...] = ()

    def by_build(self, build: str) -> LineageEntry | None:
        return next((e for e in self.entries if e.build == build), None)

    def by_tag(self, tag: str) -> LineageEntry | None:
        return next((e for e in self.entries if e.tag == tag), None)

    def to_json(self) -> str:
        rows = [
            {
                "build": e.build,
                "tag": e.tag,
                "source_name": e.source_name,
                "source_sha256": e.source_sha256,
            }
            for e in self.entries
        ]
        return json.dumps({"format": 1, "builds": rows}, indent=2) + "\n"

    @staticmethod
    def from_json(data: bytes) -> Lineage:
        raw = json.loads(data)
        return Lineage(
            tuple(
                LineageEntry(
                    str(r["build"]), str(r["tag"]), str(r["source_name"]), str(r["source_sha256"])
                )
                for r in raw["builds"]
            )
        )


class WriteBack:
    """The area in the local folder ``folder``; with ``folder`` None nothing is written
    (lineage lives in memory only, and a restart forgets it).  Raises the store's
    errors (:class:`~cadenza.store.errors.StoreError`)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._memory: dict[str, Lineage] = {}

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    # -- where the bytes are: a local folder (S3WriteBack: a prefix) -------------------
    def _get(self, relative: str) -> tuple[bytes, float] | None:
        assert self.folder is not None
        path = self.folder / relative
        try:
            with open(path, "rb") as handle:
                return handle.read(), os.fstat(handle.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise LocalFileError(str(path), f"cannot read: {oserror_reason(exc)}") from exc

    def _put(self, relative: str, body: bytes, mtime_s: float | None) -> None:
        assert self.folder is not None
        path = self.folder / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalFileError(str(path.parent), f"cannot create: {oserror_reason(exc)}") from exc
        write_atomic(path, body)
        if mtime_s is not None:
            with contextlib.suppress(OSError):
                os.utime(path, (mtime_s, mtime_s))

    @contextlib.contextmanager
    def _locked(self, track_id: str) -> Iterator[None]:
        """Exclusive, across the processes sharing the folder (``flock``)."""
        if self.folder is None:
            yield
            return
        folder = self.folder / track_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / ".lock", "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise LocalFileError(str(folder), f"cannot lock: {oserror_reason(exc)}") from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- lineage -----------------------------------------------------------------------
    def lineage(self, track_id: str) -> Lineage:
        if not self.enabled:
            return self._memory.get(track_id, Lineage())
        found = self._get(f"{track_id}/{LINEAGE_NAME}")
        if found is None:
            return Lineage()
        try:
            return Lineage.from_json(found[0])
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalFileError(f"{track_id}/{LINEAGE_NAME}", f"damaged: {exc}") from exc

    def _record(self, track_id: str, lineage: Lineage) -> None:
        if self.enabled:
            self._put(f"{track_id}/{LINEAGE_NAME}", lineage.to_json().encode(), None)
        else:
            self._memory[track_id] = lineage

    def assign(
        self, track_id: str, fingerprint: Fingerprint, *, taken: frozenset[str]
    ) -> LineageEntry:
        """The lineage entry of this build of the track, recorded first if new: the plain
        names for a track's first build when no name of the track is ``taken`` (files
        ROOT already holds for it), else a fresh tag."""
        build = build_key(fingerprint)
        with self._locked(track_id):
            lineage = self.lineage(track_id)
            known = lineage.by_build(build)
            if known is not None:
                return known
            tags = {e.tag for e in lineage.entries}
            plain = not lineage.entries and not taken
            tag = "" if plain else new_name_tag((tags | taken) - {""})
            entry = LineageEntry(build, tag, fingerprint.source_name, fingerprint.source_sha256)
            self._record(track_id, Lineage((*lineage.entries, entry)))
            return entry

    def reserve(self, track_id: str, tag: str) -> None:
        """Record ``tag`` as used by another publication (a promotion), so no JIT build
        ever gets it."""
        with self._locked(track_id):
            lineage = self.lineage(track_id)
            if lineage.by_tag(tag) is None:
                entry = LineageEntry("promoted", tag, "", "")
                self._record(track_id, Lineage((*lineage.entries, entry)))

    # -- objects -----------------------------------------------------------------------
    @staticmethod
    def relative(track_id: str, build: str, name: str) -> str:
        return f"{track_id}/{build[:BUILD_DIGITS]}/{name}"

    def read(self, track_id: str, build: str, name: str) -> tuple[bytes, float] | None:
        """A written-back object (``name``: ``<rendition>/<file>``) and its modification
        time, or None."""
        if not self.enabled:
            return None
        return self._get(self.relative(track_id, build, name))

    def write(
        self, track_id: str, build: str, name: str, body: bytes, *, mtime_s: float | None = None
    ) -> bool:
        """Write an object back (atomically), dated ``mtime_s`` where the backend lets it
        be (the source's, so its ``Last-Modified`` stays what it was when built); False
        when off."""
        if not self.enabled:
            return False
        self._put(self.relative(track_id, build, name), body, mtime_s)
        return True


class S3WriteBack(WriteBack):
    """The area below an ``s3://`` prefix (``ROOT/.jit/`` of an S3 ROOT): objects are
    put whole (a reader sees the old object or the new one), and the lineage is read,
    changed and put without a lock across processes: two processes meeting a new build
    of one track at the same moment may each record it; the last write wins, and the
    loser's manifests name a tag no lineage holds, which the next plan corrects."""

    def __init__(self, prefix: S3Url, settings: S3Settings) -> None:
        super().__init__(None)
        self.prefix = prefix
        self._settings = settings
        self._lock = threading.Lock()  # within this process

    @property
    def enabled(self) -> bool:
        return True

    def _get(self, relative: str) -> tuple[bytes, float] | None:
        async def get() -> tuple[bytes, float] | None:
            async with open_client(self._settings) as client:
                return await get_object_dated_or_none(client, self.prefix.join(relative))

        return asyncio.run(get())

    def _put(self, relative: str, body: bytes, mtime_s: float | None) -> None:
        url = self.prefix.join(relative)
        asyncio.run(put_object(url, body, content_type_for(relative), self._settings))

    @contextlib.contextmanager
    def _locked(self, track_id: str) -> Iterator[None]:
        with self._lock:
            yield
