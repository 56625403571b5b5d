"""Atomic writes on a local file system: a reader sees the old file or the new one,
never a part.

- A file is written to a hidden temporary file in the same folder (the same file
  system, so ``rename(2)`` is atomic), flushed to disk with ``fsync``, then renamed
  over its name.
- A track folder is built in a hidden working folder beside its final place and
  renamed into place only when whole (:func:`commit_folder`), so a killed run never
  leaves a folder whose manifests point at missing or partial files.  Working folders
  carry the pid of their writer, so a later run can tell a dead writer's leftovers
  from a live one's (:func:`remove_stale_folders`).

Failures raise :class:`~cadenza.store.errors.LocalFileError` with an operator-facing
reason.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from cadenza.store.errors import LocalFileError

TMP_PREFIX: Final = ".cadenza-tmp-"
TRASH_PREFIX: Final = ".cadenza-old-"
_WRITER: Final = re.compile(r"-(\d+)-[0-9a-f]{8}$")


def oserror_reason(exc: OSError) -> str:
    """What an operator can act on: the common causes in words, else the OS's text."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def write_atomic(path: Path, data: bytes | str | Iterable[str]) -> None:
    """Write ``data`` (bytes, text, or text in pieces an iterable yields in turn, so
    a long document need never be whole in memory) to a temporary file in ``path``'s
    folder, ``fsync`` it, and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            if isinstance(data, bytes):
                out.write(data)
            elif isinstance(data, str):
                out.write(data.encode("utf-8"))
            else:
                for piece in data:
                    out.write(piece.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LocalFileError(str(path), f"cannot write: {oserror_reason(exc)}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def new_folder(root: Path, name: str) -> Path:
    """A new hidden working folder in ``root`` for ``name``, marked with this pid."""
    path = root / f"{TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        raise LocalFileError(
            str(root), f"cannot create a working folder: {oserror_reason(exc)}"
        ) from exc
    return path


def working_folders_of(root: Path, name: str, pid: int) -> list[Path]:
    """The working folders a writer with ``pid`` made in ``root`` for ``name``."""
    return list(root.glob(f"{TMP_PREFIX}{name}-{pid}-*"))


def commit_folder(temp_dir: Path, final_dir: Path) -> None:
    """Rename a finished working folder into place, replacing an old copy.

    ``rename(2)`` is atomic within a file system; an existing folder is first moved
    aside (so readers see either the old or the new folder, briefly neither), then
    deleted.
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
        raise LocalFileError(
            str(final_dir), f"cannot move track into place: {oserror_reason(exc)}"
        ) from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def carry_over(old_dir: Path, new_dir: Path) -> int:
    """Hard-link (or, across file systems, copy) into ``new_dir`` every visible file of
    ``old_dir`` that ``new_dir`` does not have, at the same relative path; returns how
    many. Nothing in ``old_dir`` changes."""
    if not old_dir.is_dir():
        return 0
    count = 0
    for path in sorted(old_dir.rglob("*")):
        relative = path.relative_to(old_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        target = new_dir / relative
        if target.exists():
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
        except OSError as exc:
            raise LocalFileError(
                str(target), f"cannot keep an earlier packaging's file: {oserror_reason(exc)}"
            ) from exc
        count += 1
    return count


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs.  A killed worker whose parent died too can linger as a
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


def remove_stale_folders(root: Path, keep: Callable[[Path], bool]) -> list[Path]:
    """Delete working folders left by writers that were killed (their pid is gone).

    A writer killed between :func:`commit_folder`'s two renames leaves the old copy
    aside and nothing in place: that copy is put back when ``keep(copy)`` says it is
    worth keeping, rather than lost."""
    removed = []
    for entry in root.glob(f"{TMP_PREFIX}*"):
        match = _WRITER.search(entry.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    for entry in root.glob(f"{TRASH_PREFIX}*"):
        final_dir = root / entry.name[len(TRASH_PREFIX) :].rpartition("-")[0]
        if final_dir.name and not final_dir.exists() and keep(entry):
            with contextlib.suppress(OSError):
                os.rename(entry, final_dir)
                continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
