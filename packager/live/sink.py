"""Where the live publisher's objects go: one face, :class:`LiveSink`, with a local
folder (:class:`FolderSink`, here) and an S3 prefix (:class:`~cadenza.packager.live.
sink_s3.S3Sink`) behind it, so the publisher's order rules are written once.

Names are relative POSIX paths below the track (``aac-64k/seg-00042.p3.m4s``,
``live.json``).  Order: everything published before a :meth:`LiveSink.barrier` is in
place before anything published after it is started, so a reader never sees a name
(in ``live.json``, then in a playlist) before the object it names.  Between two
barriers the objects may be written in any order (S3: concurrently).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from cadenza.manifests.live import LIVE_STATE_NAME
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.packager.errors import OutputError
from cadenza.packager.live.files import write_atomic
from cadenza.packager.live.sink_s3 import S3Output, S3Sink


class LiveSink(Protocol):
    """One live track's objects.  Failures raise a
    :class:`~cadenza.packager.errors.PackagerError` (``OutputError`` for a local file,
    ``StorageError`` for S3), from the call or from a later one."""

    @property
    def location(self) -> str: ...

    def publish(self, name: str, data: bytes) -> None:
        """``name`` holds ``data`` whole, or (until then) its previous content."""

    def remove(self, name: str) -> None:
        """``name`` is gone (no error when it was not there)."""

    def barrier(self) -> None:
        """What was published or removed before is in place before anything after."""

    def close(self) -> None:
        """Everything published is in place; the first failure is raised."""

    def abort(self) -> None:
        """Stop at once, whatever is left unwritten (the ingest is failing anyway)."""


def prepare_folder(folder: Path) -> None:
    """A fresh folder; a previous live stream's files there are removed, a packaged
    (VOD) track is refused."""
    if (folder / PRESENTATION_NAME).exists():
        raise OutputError(folder, "holds a packaged track; choose another --track-id")
    if (folder / LIVE_STATE_NAME).exists():
        shutil.rmtree(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create: {exc.strerror}") from exc


class FolderSink:
    """A local track folder: each object written aside and renamed into place
    (:func:`~cadenza.packager.live.files.write_atomic`), in call order, so a barrier
    has nothing to wait for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def location(self) -> str:
        return str(self.folder)

    def publish(self, name: str, data: bytes) -> None:
        path = self.folder / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
        except OSError as exc:
            raise OutputError(path, f"cannot write: {exc.strerror or exc}") from exc

    def remove(self, name: str) -> None:
        try:
            (self.folder / name).unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(self.folder / name, f"cannot remove: {exc.strerror}") from exc

    def barrier(self) -> None:
        """Each write is in place when :meth:`publish` returns."""

    def close(self) -> None:
        """Nothing is pending."""

    def abort(self) -> None:
        """Nothing is pending."""


def open_sink(out_root: Path | S3Output, track_id: str) -> LiveSink:
    """The sink of ``out_root/track_id``, prepared: a previous live stream there is
    cleared, a packaged track refused (:class:`OutputError`)."""
    if isinstance(out_root, S3Output):
        return S3Sink.open(out_root, track_id)
    folder = out_root / track_id
    prepare_folder(folder)
    return FolderSink(folder)
