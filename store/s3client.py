"""One S3 client factory for both sides, and the mapping of botocore's errors.

The client honours an explicit endpoint (``AWS_ENDPOINT_URL``: MinIO, a moto server),
bounded connect and read timeouts, and botocore's ``standard`` retry mode with an
explicit attempt count: throttling, 5xx answers and connection errors are retried with
exponential backoff and full jitter (``rand(0, 1) * min(2 ** attempt, 20)`` seconds).
The packager allows 5 attempts and long timeouts; the origin 2 attempts and short
timeouts, so that a dead S3 turns into a quick 503 rather than a hung request.

aioboto3 and botocore are imported only inside these functions: a local store never
loads them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cadenza.manifests.media_types import DEFAULT_MANIFEST_MAX_AGE_S, DEFAULT_SEGMENT_MAX_AGE_S
from cadenza.store.errors import RequestFailedError, StoreTimeoutError, StoreUnavailableError

T = TypeVar("T")
MIB: Final = 1024 * 1024
_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How the store talks to S3.  Picklable: it travels to Dask workers."""

    endpoint_url: str | None = None  # AWS_ENDPOINT_URL, e.g. MinIO or a moto server
    max_attempts: int = 5  # per request, the first included (botocore "standard" mode)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    concurrency: int = 8  # requests in flight per track
    multipart_threshold_bytes: int = 16 * MIB
    part_size_bytes: int = 8 * MIB
    manifest_max_age_s: int = DEFAULT_MANIFEST_MAX_AGE_S
    segment_max_age_s: int = DEFAULT_SEGMENT_MAX_AGE_S


@asynccontextmanager
async def open_client(settings: S3Settings) -> AsyncIterator[Any]:
    """An aioboto3 S3 client configured from ``settings``, closed on exit."""
    import aioboto3
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        # total_max_attempts counts the first try too (botocore's max_attempts would not).
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        max_pool_connections=max(10, settings.concurrency),
    )
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=settings.endpoint_url, config=config) as client:
        yield client


def s3_errors() -> tuple[type[BaseException], ...]:
    """What a request can raise: S3's answer, botocore's own errors, the transport's."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, OSError, TimeoutError)


def error_code(exc: BaseException) -> tuple[str, int]:
    """S3's error code and HTTP status, or ("", 0) for an error without an answer."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_not_found(exc: BaseException) -> bool:
    code, status = error_code(exc)
    return code in _NOT_FOUND or status == 404


def request_failed(url: object, action: str, exc: BaseException) -> RequestFailedError:
    """botocore's error (or a transport error) as a :class:`RequestFailedError` naming
    the URL, S3's code and status, and how many attempts were made."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code, status = error_code(exc)
        tries = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) + 1
        reason = f"{action} failed: {code or 'error'}"
        if status:
            reason += f" (HTTP {status})"
        if tries > 1:
            reason += f" after {tries} attempts"
    else:
        detail = str(exc) or type(exc).__name__
        reason = f"{action} failed: S3 unreachable ({type(exc).__name__}: {detail})"
    return RequestFailedError(str(url), reason, not_found=is_not_found(exc))


def unavailable(exc: BaseException, what: str, backend: str) -> StoreUnavailableError:
    """A timeout (:class:`StoreTimeoutError`) or any other failure to get an answer."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    if isinstance(exc, (TimeoutError, ConnectTimeoutError, ReadTimeoutError)):
        return StoreTimeoutError(backend, f"{what}: timed out")
    return StoreUnavailableError(backend, f"{what}: {type(exc).__name__}")


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
