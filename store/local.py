"""Tracks in a local folder: ``ROOT/<track_id>/...``.

Read face: files below the root; symlinks that resolve outside it are not followed,
and a name no file can have is a missing object, never an unwell disk.  Write face: a
track is built in a working folder inside the root (:meth:`LocalStore.new_working_folder`)
and renamed into place whole (:meth:`LocalStore.put_track`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.store.api import ObjectInfo, StoredObject
from cadenza.store.atomic import (
    TRASH_PREFIX,
    carry_over,
    commit_folder,
    new_folder,
    oserror_reason,
    remove_stale_folders,
)
from cadenza.store.complete import is_complete, is_track_name
from cadenza.store.errors import LocalFileError, ObjectMissingError, StoreUnavailableError

log = logging.getLogger("cadenza.store.local")

# stat() errors that say the name cannot exist (a segment over NAME_MAX, a symlink
# loop), not that the disk is unwell: a missing object, never "unavailable".
_NO_SUCH_NAME: Final = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


def folder_is_complete(folder: Path) -> bool:
    """Whether the track folder ``folder`` is complete (:mod:`cadenza.store.complete`)."""
    try:
        data = (folder / PRESENTATION_NAME).read_bytes()
    except OSError:
        return False
    return is_complete(data)


def _info(stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(stat.st_size, stat.st_mtime, f"{stat.st_size:x}-{stat.st_mtime_ns:x}")


class LocalStore:
    """Both faces over one folder."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    # -- read face -------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        try:
            path = (self.root / key).resolve()
        except RuntimeError:  # Python 3.11 reports a symlink loop so
            raise ObjectMissingError(key) from None
        if not path.is_relative_to(self.root):
            raise ObjectMissingError(key)
        return path

    def _stat(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectMissingError(key) from None
        except OSError as exc:
            if exc.errno in _NO_SUCH_NAME:  # a name no file can have: the client's doing
                raise ObjectMissingError(key) from None
            raise StoreUnavailableError(self.name, f"cannot stat {key}: {exc.strerror}") from exc
        if not path.is_file():
            raise ObjectMissingError(key, "is not a file")
        return path, stat

    async def head(self, key: str) -> ObjectInfo:
        _, stat = await asyncio.to_thread(self._stat, key)
        return _info(stat)

    def _read(self, key: str) -> StoredObject:
        path, stat = self._stat(key)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise StoreUnavailableError(self.name, f"cannot read {key}: {exc.strerror}") from exc
        return StoredObject(_info(stat), body)

    async def read(self, key: str) -> StoredObject:
        return await asyncio.to_thread(self._read, key)

    def _open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        path, _ = self._stat(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the caller streams it, then closes it
        except FileNotFoundError:  # removed since the stat
            raise ObjectMissingError(key) from None
        except OSError as exc:
            raise StoreUnavailableError(self.name, f"cannot open {key}: {exc.strerror}") from exc
        try:
            stat = os.fstat(handle.fileno())  # the file being sent, even if renamed over since
        except OSError as exc:
            handle.close()
            raise StoreUnavailableError(self.name, f"cannot stat {key}: {exc.strerror}") from exc
        return handle, _info(stat)

    async def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """An open handle on ``key`` and its validators, for streaming a large file.

        Opened before anything is answered, so a missing or unreadable file is a clean
        error rather than a truncated answer; the validators describe the very inode
        that will be read."""
        return await asyncio.to_thread(self._open, key)

    def _read_range(self, key: str, start: int, end: int) -> bytes:
        path, _ = self._stat(key)
        try:
            with open(path, "rb") as handle:
                handle.seek(start)
                return handle.read(end - start + 1)
        except FileNotFoundError:
            raise ObjectMissingError(key) from None
        except OSError as exc:
            raise StoreUnavailableError(self.name, f"cannot read {key}: {exc.strerror}") from exc

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await asyncio.to_thread(self._read_range, key, start, end)

    def _list_tracks(self) -> list[str]:
        try:
            entries = [p for p in self.root.iterdir() if is_track_name(p.name)]
        except (FileNotFoundError, NotADirectoryError):
            return []  # no root, no tracks: /readyz is the probe that says so
        except OSError as exc:
            log.error("cannot list storage root %s: %s", self.root, exc.strerror)
            raise StoreUnavailableError(self.name, "cannot list the storage root") from exc
        return sorted(p.name for p in entries if folder_is_complete(p))

    async def list_tracks(self) -> list[str]:
        """The complete tracks, sorted."""
        return await asyncio.to_thread(self._list_tracks)

    async def ping(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            # Only the log names the folder: answers never carry the server's paths.
            log.error("storage root %s is not a directory", self.root)
            raise StoreUnavailableError(self.name, "the storage root is not a directory")

    async def close(self) -> None:
        return None

    # -- write face ------------------------------------------------------------------
    def location(self, track_id: str) -> str:
        return str(self.root / track_id)

    def complete(self, track_ids: Sequence[str]) -> set[str]:
        return {t for t in track_ids if folder_is_complete(self.root / t)}

    def new_working_folder(self, track_id: str) -> Path:
        """A hidden folder in the root to build ``track_id`` in, then :meth:`put_track`."""
        return new_folder(self.root, track_id)

    def put_track(self, folder: Path, track_id: str) -> int:
        """Rename the finished track ``folder`` (a working folder in the root) into place
        whole, replacing an old copy whose other files (an earlier packaging's, under
        their own version-tagged names) are linked in first; 0 bytes are sent."""
        carry_over(self.root / track_id, folder)
        commit_folder(folder, self.root / track_id)
        return 0

    def delete_track(self, track_id: str) -> None:
        """Move the track aside in one rename (it stops being complete at once), then
        delete it."""
        final_dir = self.root / track_id
        aside = final_dir.with_name(f"{TRASH_PREFIX}{track_id}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(final_dir, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LocalFileError(str(final_dir), f"cannot delete: {oserror_reason(exc)}") from exc
        shutil.rmtree(aside, ignore_errors=True)

    def remove_stale(self) -> list[Path]:
        """Delete what writers that were killed left in the root (see
        :func:`cadenza.store.atomic.remove_stale_folders`)."""
        return remove_stale_folders(self.root, folder_is_complete)
