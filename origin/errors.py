"""Origin errors, each with the HTTP status it maps to at the edge.

Handlers raise these; ``origin.app``'s error middleware turns them into a JSON
body ``{"error": code, "detail": text}``.  Storage backends map botocore and
OS errors to :class:`StorageUnavailableError` or :class:`ObjectNotFoundError`
at their boundary, so no third-party exception reaches a handler."""

from __future__ import annotations


class OriginError(Exception):
    status = 500
    code = "internal"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class BadRequestError(OriginError):
    status = 400
    code = "bad_request"


class ForbiddenPathError(BadRequestError):
    """A path that tries to leave ROOT or is otherwise not a plain relative path."""

    code = "bad_path"


class ObjectNotFoundError(OriginError):
    status = 404
    code = "not_found"


class NoMatchingRenditionsError(OriginError):
    status = 404
    code = "no_matching_renditions"


class RangeNotSatisfiableError(OriginError):
    status = 416
    code = "range_not_satisfiable"

    def __init__(self, detail: str, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        super().__init__(detail)


class StorageUnavailableError(OriginError):
    """Storage could not be reached or answered with a server error: retry later."""

    status = 503
    code = "storage_unavailable"

    def __init__(self, detail: str, backend: str) -> None:
        self.backend = backend
        super().__init__(detail)


class SettingsError(Exception):
    """An invalid setting, named with where it came from."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"setting {name}={value!r}: {reason}")
