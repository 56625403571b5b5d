"""Errors of a stated queue (``POST /v1/sessions/{sid}/queue``), each with the
HTTP status the edge answers it with."""

from __future__ import annotations

from cadenza.origin.errors import BadRequestError, OriginError


class BadQueueError(BadRequestError):
    """A queue body cadenza cannot use: ``reason`` says why."""

    code = "bad_queue"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class QueueTooLongError(OriginError):
    """More track ids than ``prefetch_queue_max``."""

    status = 413
    code = "queue_too_long"

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__(f"{count} tracks in the queue; the limit is {limit}")
