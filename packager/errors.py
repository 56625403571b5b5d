"""Errors raised by the packager.  Every error names the file (where there is
one) and a reason the operator can act on.  FFmpeg errors from PyAV are mapped
to these at the boundary (``cadenza.packager.decode``); nothing above it sees ``av.error``.
The track store's errors are mapped by :func:`store_errors` where the packager calls the
store (``cadenza.packager.output``, ``cadenza.packager.s3``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cadenza.store.errors import BadS3UrlError, LocalFileError, RequestFailedError, StoreError


class PackagerError(Exception):
    """Base class for every packager error."""


class InputError(PackagerError):
    """An input file that cannot be packaged: missing, empty, undecodable, no audio."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LadderError(PackagerError):
    """An invalid ladder: unknown codec, bitrate out of range, unsupported profile."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"ladder {where}: {reason}")


class EncodeError(PackagerError):
    """An encoder that refused its settings or failed mid-stream."""

    def __init__(self, rendition_id: str, reason: str) -> None:
        self.rendition_id = rendition_id
        self.reason = reason
        super().__init__(f"encoding {rendition_id}: {reason}")


class OutputError(PackagerError):
    """The output location cannot be written: unwritable, full, or not a directory."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class Mp4Error(PackagerError):
    """Malformed input to the MP4 box writer or reader."""

    def __init__(self, box: str, reason: str) -> None:
        self.box = box
        self.reason = reason
        super().__init__(f"mp4 {box}: {reason}")


class StorageError(PackagerError):
    """An S3 location that cannot be read or written: unreachable, denied, or still
    failing (throttled, 5xx) after the retries.  The store maps botocore's errors to
    its own, and :func:`store_errors` maps those to this."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class CatalogueError(PackagerError):
    """A catalogue file that cannot be used; ``problems`` lists (line number, reason)."""

    def __init__(self, path: Path | str, problems: list[tuple[int, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        shown = "; ".join(
            f"line {line}: {reason}" if line else reason for line, reason in problems[:10]
        )
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__(f"{self.path}: {shown}{more}")


class ClusterError(PackagerError):
    """A Dask cluster that cannot be used: unreachable, or Dask is not installed."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"cluster {address}: {reason}")


def from_store(exc: StoreError) -> PackagerError:
    """The packager's error for a store error: a local file is an :class:`OutputError`,
    an S3 request a :class:`StorageError`, a bad ``s3://`` URL an :class:`InputError`."""
    if isinstance(exc, LocalFileError):
        return OutputError(exc.path, exc.reason)
    if isinstance(exc, RequestFailedError):
        return StorageError(exc.url, exc.reason)
    if isinstance(exc, BadS3UrlError):
        return InputError(exc.text, exc.reason)
    return StorageError("storage", str(exc))


@contextmanager
def store_errors() -> Iterator[None]:
    """Raise the store's errors inside the block as the packager's (:func:`from_store`)."""
    try:
        yield
    except StoreError as exc:
        raise from_store(exc) from exc
