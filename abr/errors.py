"""Errors raised by the pure ABR layer.  Each carries the fields a caller needs to
act on it (which input, which line) and a message a user can read."""

from __future__ import annotations


class AbrError(Exception):
    """Base class for every error in ``abr``."""


class TraceError(AbrError, ValueError):
    """A throughput trace that cannot be used.

    ``source`` names the input (the caller passes a file's path), ``line_no`` is
    1-based, 0 for the input as a whole.
    """

    def __init__(self, source: str, line_no: int, reason: str) -> None:
        self.source = source
        self.line_no = line_no
        self.reason = reason
        super().__init__(f"{source}:{line_no}: {reason}")


class BeaconLogError(AbrError, ValueError):
    """A line of a CMCD beacon log that is neither CMCD text nor a JSON object."""

    def __init__(self, line_no: int, reason: str) -> None:
        self.line_no = line_no
        self.reason = reason
        super().__init__(f"line {line_no}: {reason}")
