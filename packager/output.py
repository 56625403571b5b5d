"""Atomic output: a track is built in a hidden temporary folder beside its
final place and renamed into place only when whole, so a killed run never
leaves a folder whose manifests point at missing or partial files.

Inside the temporary folder the manifests are written last, and
``presentation.json`` is the very last file: its presence marks a complete
track, which is what re-runs check before skipping.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cadenza.manifests.errors import ManifestError
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.packager.errors import OutputError

TMP_PREFIX: Final = ".cadenza-tmp-"
TRASH_PREFIX: Final = ".cadenza-old-"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


def track_id_for(path: Path) -> str:
    """The input's stem reduced to ``[A-Za-z0-9._-]``; never empty, never hidden."""
    reduced = _UNSAFE.sub("", path.stem).lstrip(".")
    if reduced in ("", "..", "."):
        reduced = "track-" + uuid.uuid5(uuid.NAMESPACE_URL, str(path)).hex[:8]
    return reduced


def oserror_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


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
    """A track folder is complete when its ``presentation.json`` parses."""
    try:
        presentation_from_json((track_dir / PRESENTATION_NAME).read_bytes())
    except (OSError, ManifestError):
        return False
    return True


def new_temp_dir(root: Path, track_id: str) -> Path:
    path = root / f"{TMP_PREFIX}{track_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        raise OutputError(root, f"cannot create a working folder: {oserror_reason(exc)}") from exc
    return path


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A killed worker whose parent died too can linger as a
    zombie until init reaps it (some container inits never do): that is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(2)
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


def remove_stale_temp_dirs(root: Path) -> list[Path]:
    """Delete working folders left by runs that were killed (their pid is gone)."""
    removed = []
    for entry in root.glob(f"{TMP_PREFIX}*"):
        match = re.search(r"-(\d+)-[0-9a-f]{8}$", entry.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    for entry in root.glob(f"{TRASH_PREFIX}*"):
        # A run killed between commit_track's two renames leaves the old copy aside
        # and no track in place: put the old one back rather than lose it.
        final_dir = root / entry.name[len(TRASH_PREFIX) :].rpartition("-")[0]
        if final_dir.name and not final_dir.exists() and is_complete(entry):
            with contextlib.suppress(OSError):
                os.rename(entry, final_dir)
                continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def commit_track(temp_dir: Path, final_dir: Path) -> None:
    """Rename a finished working folder into place, replacing an old copy.

    ``rename(2)`` is atomic within a file system; an existing folder is first
    moved aside (so readers see either the old or the new track, briefly
    neither), then deleted.
    """
    old: Path | None = None
    try:
        if final_dir.exists():
            old = final_dir.with_name(f"{TRASH_PREFIX}{final_dir.name}-{uuid.uuid4().hex[:8]}")
            os.rename(final_dir, old)
        os.rename(temp_dir, final_dir)
    except OSError as exc:
        if old is not None and not final_dir.exists():
            with contextlib.suppress(OSError):
                os.rename(old, final_dir)
        raise OutputError(
            final_dir, f"cannot move track into place: {oserror_reason(exc)}"
        ) from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text``, or the pieces an iterable yields in turn (so a long document
    need never be whole in memory), to a temporary file renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            if isinstance(text, str):
                out.write(text)
            else:
                for piece in text:
                    out.write(piece)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(path, f"cannot write: {oserror_reason(exc)}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
