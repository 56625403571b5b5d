"""Errors raised by the track store.  Each carries the fields an edge needs to map it:
the origin turns them into HTTP answers (``cadenza.origin.storage``), the packager into
its own errors and exit codes (``cadenza.packager.output``, ``cadenza.packager.s3``).
Nothing above the store sees botocore's exceptions or a raw ``OSError``."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for every store error."""


class ObjectMissingError(StoreError):
    """No object at ``key``: absent, not a file, or a name no file can have."""

    def __init__(self, key: str, reason: str = "does not exist") -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key} {reason}")


class StoreUnavailableError(StoreError):
    """The backend could not be reached or failed to answer; ``detail`` never names a
    server path (answers may carry it)."""

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(detail)


class StoreTimeoutError(StoreUnavailableError):
    """The backend did not answer within the configured timeout."""


class BuildBusyError(StoreUnavailableError):
    """A just-in-time backend whose build queue is full: the object exists (it can be
    built) but not now; ``retry_after_s`` is when to ask again."""

    def __init__(self, backend: str, detail: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(backend, detail)


class SourceUnusableError(StoreError):
    """A just-in-time backend's source for ``key`` cannot be built from (corrupt,
    truncated, no audio): ``source`` is its file name (never a server path),
    ``reason`` what is wrong with it."""

    def __init__(self, key: str, source: str, reason: str) -> None:
        self.key = key
        self.source = source
        self.reason = reason
        super().__init__(f"{key}: source {source} cannot be used: {reason}")


class RequestFailedError(StoreError):
    """An S3 request that still failed after the retries: ``url`` is the object or prefix
    it was about, ``reason`` what was tried and what S3 (or the network) answered."""

    def __init__(self, url: str, reason: str, *, not_found: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.not_found = not_found  # S3 answered 404 / NoSuchKey
        super().__init__(f"{url}: {reason}")


class LocalFileError(StoreError):
    """A local file or folder that cannot be written, read for upload, or moved into
    place; ``reason`` is the operator-facing cause (``no space left on device``...)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NotATrackError(LocalFileError):
    """A folder handed to the write face that is not a packaged track."""


class BadS3UrlError(StoreError, ValueError):
    """Text that is not a usable ``s3://bucket/key`` URL; a ``ValueError`` too, so
    argument parsers treat it as a bad value."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r}: {reason}")
