"""Opening an input media file with PyAV, with every reason it cannot be opened mapped
to an :class:`~cadenza.packager.errors.InputError` that names the file.  Shared by
``cadenza package`` (:mod:`cadenza.packager.decode`) and ``cadenza segment``
(:mod:`cadenza.packager.rung_input`)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import av.error
from av.container import InputContainer

from cadenza.packager.errors import InputError


def open_media(path: Path) -> InputContainer:
    """``path`` opened for demuxing; refused early when it is missing, a folder, empty
    or unreadable, so the reason is ours rather than FFmpeg's."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a media file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"cannot stat: {exc.strerror}") from exc
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.InvalidDataError as exc:
        raise InputError(path, "not a media file FFmpeg can read (invalid data)") from exc
    except av.error.FFmpegError as exc:
        raise InputError(path, f"FFmpeg cannot open it: {exc.strerror}") from exc


class MediaReader:
    """One open input container, closed by :meth:`close` or on leaving a ``with`` block:
    the base of the packager's readers (:class:`~cadenza.packager.decode.Decoder`,
    :class:`~cadenza.packager.rung_input.RungInput`)."""

    _container: InputContainer

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
