"""The packager's local output, over the track store's atomic-write rule
(:mod:`cadenza.store.atomic`) and its definition of a complete track.

A track is built in a hidden working folder beside its final place and renamed into
place only when whole, so a killed run never leaves a folder whose manifests point at
missing or partial files.  Inside the working folder the manifests are written last,
and ``presentation.json`` is the very last file: its presence marks a complete track,
which is what re-runs check before skipping.

Every function here raises :class:`~cadenza.packager.errors.OutputError`, never a
store error.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cadenza.packager.errors import OutputError, store_errors
from cadenza.store import atomic
from cadenza.store.atomic import TMP_PREFIX, oserror_reason
from cadenza.store.local import folder_is_complete

__all__ = [
    "commit_track",
    "is_complete",
    "new_temp_dir",
    "oserror_reason",
    "prepare_output_root",
    "remove_stale_temp_dirs",
    "remove_working_folders",
    "track_id_for",
    "write_json_atomic",
    "write_text_atomic",
]

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


def track_id_for(path: Path) -> str:
    """The input's stem reduced to ``[A-Za-z0-9._-]``; never empty, never hidden."""
    reduced = _UNSAFE.sub("", path.stem).lstrip(".")
    if reduced in ("", "..", "."):
        reduced = "track-" + uuid.uuid5(uuid.NAMESPACE_URL, str(path)).hex[:8]
    return reduced


def prepare_output_root(root: Path) -> None:
    """Create ``--out`` and check it is a writable directory, before any work."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(root, "exists and is not a directory") from None
    except OSError as exc:
        raise OutputError(root, f"cannot create output directory: {oserror_reason(exc)}") from exc
    if not root.is_dir():
        raise OutputError(root, "exists and is not a directory")
    probe = root / f"{TMP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(root, f"output directory is not writable: {oserror_reason(exc)}") from exc


def is_complete(track_dir: Path) -> bool:
    """Whether the track folder is complete (:mod:`cadenza.store.complete`)."""
    return folder_is_complete(track_dir)


def new_temp_dir(root: Path, track_id: str) -> Path:
    with store_errors():
        return atomic.new_folder(root, track_id)


def remove_stale_temp_dirs(root: Path) -> list[Path]:
    """Delete working folders left by runs that were killed (their pid is gone); an
    old copy left aside by a run killed mid-commit is put back if complete."""
    return atomic.remove_stale_folders(root, folder_is_complete)


def remove_working_folders(root: Path, track_id: str, pid: int) -> None:
    """Delete the working folders a dead worker ``pid`` left for ``track_id``."""
    for leftover in atomic.working_folders_of(root, track_id, pid):
        shutil.rmtree(leftover, ignore_errors=True)


def commit_track(temp_dir: Path, final_dir: Path) -> None:
    """Rename a finished working folder into place, replacing an old copy
    (:func:`cadenza.store.atomic.commit_folder`).

    The old copy's files that the new packaging does not rewrite (an earlier
    packaging's segments and playlists, under their own version-tagged names) are
    linked into the working folder first, so a player or cache still holding an old
    playlist finds every file it names until ``cadenza gc`` removes them."""
    with store_errors():
        atomic.carry_over(final_dir, temp_dir)
        atomic.commit_folder(temp_dir, final_dir)


def write_text_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text``, or the pieces an iterable yields in turn (so a long document
    need never be whole in memory), atomically (:func:`cadenza.store.atomic.write_atomic`)."""
    with store_errors():
        atomic.write_atomic(path, text)


def write_json_atomic(path: Path, data: object) -> None:
    with store_errors():
        atomic.write_json_atomic(path, data)
