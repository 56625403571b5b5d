"""Opening an input media file with PyAV, with every reason it cannot be opened mapped
to an :class:`~cadenza.packager.errors.InputError` that names the file.  Shared by
``cadenza package`` (:mod:`cadenza.packager.decode`) and ``cadenza segment``
(:mod:`cadenza.packager.rung_input`)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import TracebackType
from typing import Final, Self

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


# A WAV header's chunks before ``data`` (fmt, LIST tags, bext...) fit well inside this.
WAV_HEADER_SCAN_BYTES: Final = 1 << 20


def wav_declared_ticks(path: Path) -> tuple[int, int] | None:
    """``(sample frames, sample rate)`` a RIFF/WAVE file's header declares: its ``data``
    chunk size over the ``fmt `` chunk's block align.  None for anything else, or a
    header that declares no size (0 or 0xFFFFFFFF: a stream, or RF64).

    FFmpeg's demuxer reports a duration estimated from the file's size, so a file
    cut short looks whole; the header still says how long it was meant to be.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(WAV_HEADER_SCAN_BYTES)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, block_align, rate = 12, 0, 0
    while offset + 8 <= len(head):
        chunk_id = head[offset : offset + 4]
        (size,) = struct.unpack_from("<I", head, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and size >= 16 and body + 16 <= len(head):
            _, _, rate, _, block_align = struct.unpack_from("<HHIIH", head, body)
        elif chunk_id == b"data":
            if block_align <= 0 or rate <= 0 or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align, rate
        offset = body + size + (size & 1)  # chunks are padded to an even length
    return None


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
