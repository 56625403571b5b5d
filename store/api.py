"""The track store's two faces.

- The read face (:class:`TrackReader`, async) is the origin's: objects with their size,
  modification time and a validator basis, the list of complete tracks, a readiness
  probe.
- The write face (:class:`TrackWriter`, blocking) is the packager's: put the files of a
  finished local track folder, in the order that keeps readers safe (see
  :mod:`cadenza.store.s3write`), delete a track, say which tracks are complete.

Each backend (:mod:`cadenza.store.local`, :mod:`cadenza.store.s3read` and
:mod:`cadenza.store.s3write`) implements both; a complete track is defined once, in
:mod:`cadenza.store.complete`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size_bytes: int
    mtime_s: float
    etag_hint: str  # backend validator (S3 ETag, or size+mtime for files)

    @property
    def last_modified(self) -> str:
        """``mtime_s`` as an HTTP date (IMF-fixdate, RFC 9110 5.6.7)."""
        return formatdate(self.mtime_s, usegmt=True)


class Provenance(enum.StrEnum):
    """How an object came to be readable: the packager stored it, or a just-in-time
    backend (:mod:`cadenza.packager.jit`) built it for this read, or built it on an
    earlier read and wrote it back."""

    STORED = "stored"
    JIT_BUILT = "jit_built"
    JIT_STORED = "jit_stored"


class ReadPriority(enum.StrEnum):
    """Who waits for a read: a player, or nobody (a warm-up: prefetch, read-ahead).
    A backend that builds objects (the just-in-time store) gives player reads the
    room and refuses background builds when it has none to spare."""

    PLAYER = "player"
    BACKGROUND = "background"


# Set by whoever reads on nobody's behalf, for the reads of its task (a context
# variable follows the task through every await, so no signature changes).
READ_PRIORITY: ContextVar[ReadPriority] = ContextVar(
    "cadenza_read_priority", default=ReadPriority.PLAYER
)


@dataclass(frozen=True, slots=True)
class StoredObject:
    info: ObjectInfo
    body: bytes
    provenance: Provenance = Provenance.STORED


class TrackReader(Protocol):
    """Raises :class:`~cadenza.store.errors.ObjectMissingError` for a missing key and
    :class:`~cadenza.store.errors.StoreUnavailableError` when the backend is unwell."""

    name: str

    async def head(self, key: str) -> ObjectInfo: ...

    async def read(self, key: str) -> StoredObject: ...

    async def read_range(self, key: str, start: int, end: int) -> bytes: ...

    async def ping(self) -> None: ...

    async def list_tracks(self) -> list[str]: ...

    async def close(self) -> None: ...


class TrackWriter(Protocol):
    """Raises :class:`~cadenza.store.errors.LocalFileError` for a local file that cannot
    be read or written and :class:`~cadenza.store.errors.RequestFailedError` for a
    remote request that still fails after the retries."""

    def location(self, track_id: str) -> str: ...

    def complete(self, track_ids: Sequence[str]) -> set[str]: ...

    def put_track(self, folder: Path, track_id: str) -> int: ...

    def delete_track(self, track_id: str) -> None: ...
