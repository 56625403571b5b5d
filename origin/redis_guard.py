"""The Redis boundary's shared parts: every round trip runs inside :func:`guarded`,
which bounds it in time and turns every redis-py error into
:class:`~cadenza.origin.errors.StoreUnavailableError`, so no other module sees one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

from redis.exceptions import RedisError

from cadenza.origin.errors import StoreUnavailableError

KEY_PREFIX: Final = "cadenza:"
# MGET / HVALS batches: one reply stays small however many sessions there are.
BATCH: Final = 1000
BACKEND: Final = "redis"


@asynccontextmanager
async def guarded(what: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound one round trip by ``timeout_s`` and map redis-py's errors to ours."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (RedisError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise StoreUnavailableError(f"redis {what}: {detail}", BACKEND) from exc


def reply_text(value: object) -> str:
    """A member of a set as text (redis-py's reply types cover scored ranges too)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise StoreUnavailableError(f"redis: unexpected reply {type(value).__name__}", BACKEND)


def batches(items: Sequence[str], size: int = BATCH) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
