"""Origin errors, each with the HTTP status it maps to at the edge.

Handlers raise these; ``cadenza.origin.edge``'s error table turns them into a JSON
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


class PreconditionFailedError(OriginError):
    """``If-Match`` or ``If-Unmodified-Since`` does not hold (RFC 9110 13.1.1,
    13.1.4): the object changed since the client last saw it."""

    status = 412
    code = "precondition_failed"


class StorageUnavailableError(OriginError):
    """Storage could not be reached or answered with a server error: retry later."""

    status = 503
    code = "storage_unavailable"
    kind = "unavailable"  # the ``kind`` label of cadenza_storage_errors_total

    def __init__(self, detail: str, backend: str) -> None:
        self.backend = backend
        super().__init__(detail)


class StorageTimeoutError(StorageUnavailableError):
    """Storage did not answer within ``storage_timeout_s``: a gateway timeout, with
    ``Retry-After`` like any storage failure."""

    status = 504
    code = "storage_timeout"
    kind = "timeout"


class BuilderBusyError(StorageUnavailableError):
    """The just-in-time builder's queue is full (``jit_queue_max``): ``503`` with
    ``Retry-After``, never an unbounded wait (RFC 9110 15.6.4)."""

    code = "jit_busy"
    kind = "busy"


class SourceUnusableError(OriginError):
    """A just-in-time track whose source file cannot be built from (corrupt,
    truncated, no audio): ``502``, since the fault lies in what the origin builds
    from, not in the request (a ``422`` would blame the request's content); the
    detail names the file and the problem, never a server path.  The failure is
    cached for ``jit_negative_ttl_s``, so a player retrying does not re-probe it."""

    status = 502
    code = "bad_source"


class StoreUnavailableError(OriginError):
    """The shared session store (Redis) did not answer in time or failed.

    Raised only inside the store layer: the fallback stores catch it and serve
    from local state, so it never reaches a handler in normal operation."""

    status = 503
    code = "store_unavailable"

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


class BadBeaconError(BadRequestError):
    """A ``POST /v1/beacons`` body cadenza cannot use; the detail says why."""

    code = "bad_beacon"


class PayloadTooLargeError(OriginError):
    status = 413
    code = "payload_too_large"

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(f"body of {size_bytes} bytes is over the {limit_bytes}-byte limit")


class UnsupportedMediaTypeError(OriginError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeoutError(OriginError):
    """The client did not send its request body in time (a slow or stalled sender)."""

    status = 408
    code = "request_timeout"


class RateLimitedError(OriginError):
    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class SessionNotFoundError(ObjectNotFoundError):
    code = "unknown_session"


class NotEnoughDataError(OriginError):
    """A computation over live data that has too little data to mean anything yet."""

    status = 409
    code = "not_enough_data"


class AccessDeniedError(OriginError):
    """A media request without a valid signed-URL token (``cadenza.origin.auth``): ``403``.

    The code says which check failed; no detail names a key or the signature
    that was expected."""

    status = 403
    code = "forbidden"


class TokenMissingError(AccessDeniedError):
    code = "token_missing"


class TokenMalformedError(AccessDeniedError):
    code = "token_malformed"


class BadSignatureError(AccessDeniedError):
    code = "bad_signature"


class TokenExpiredError(AccessDeniedError):
    code = "token_expired"


class WrongPathError(AccessDeniedError):
    """A valid token used for a path outside its scope (a swapped token)."""

    code = "wrong_path"


class AdminTokenMissingError(OriginError):
    """An admin endpoint asked without ``Authorization: Bearer``: ``401`` with
    ``WWW-Authenticate: Bearer``."""

    status = 401
    code = "unauthorized"


class AdminTokenInvalidError(OriginError):
    status = 403
    code = "bad_admin_token"


class ObjectTooLargeError(Exception):
    """An object above ``cache_max_object_bytes``: streamed instead of cached
    (never an answer of its own)."""

    def __init__(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        super().__init__(size_bytes)


class KeyDeliveryError(OriginError):
    """An error of ``/v1/licence/clearkey`` or ``/v1/keys/`` (:mod:`cadenza.origin.licences`):
    its answer is ``Cache-Control: no-store, private`` like the keys themselves."""


class BadLicenceRequestError(KeyDeliveryError, BadRequestError):
    """A licence request body that is not a W3C ClearKey request, or a malformed key id."""

    code = "bad_licence_request"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class KeyNotFoundError(KeyDeliveryError, ObjectNotFoundError):
    """A key id the caller's grant does not hold (or, for a grant of everything, that
    the key store does not hold): ``404``, told only to an authorised caller."""

    code = "unknown_key"

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no key {key_id} for this grant")


class LicenceDeniedError(KeyDeliveryError, AccessDeniedError):
    """A licence or key request refused by access control; ``reason`` is the failed
    check's code (``token_missing``, ``bad_signature``, ``token_expired``...)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.code = reason
        super().__init__(detail)


class KeyDeliveryOffError(KeyDeliveryError):
    """No key-encryption key is configured, so no key can be unwrapped."""

    status = 503
    code = "key_delivery_off"
