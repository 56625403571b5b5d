"""HTTP ``Range`` header parsing (RFC 9110 14.1.2 and 14.2), pure.

Only a single byte range is served; a malformed header is ignored (the full
representation is sent, RFC 9110 14.2), an unsatisfiable one raises
:class:`RangeNotSatisfiableError` (416 with ``Content-Range: bytes */size``).
Multiple ranges are answered with the whole object, which RFC 9110 allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from cadenza.origin.errors import RangeNotSatisfiableError

MAX_HEADER_CHARS = 200


@dataclass(frozen=True, slots=True)
class ByteSpan:
    start: int  # first byte, inclusive
    end: int  # last byte, inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _digits(text: str) -> bool:
    """RFC 9110's 1*DIGIT: ASCII only (``str.isdigit`` is also true for '²' and '٣')."""
    return text.isascii() and text.isdigit()


def parse_range(header: str | None, size_bytes: int) -> ByteSpan | None:
    """The span to send, or ``None`` to send the whole object."""
    if header is None or len(header) > MAX_HEADER_CHARS:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (_digits(first) or first == "") or not (_digits(last) or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size_bytes == 0:
            raise RangeNotSatisfiableError(f"suffix range {header!r} selects nothing", size_bytes)
        return ByteSpan(max(0, size_bytes - suffix), size_bytes - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignore (RFC 9110 14.1.2)
    end = int(last) if last else size_bytes - 1
    if start >= size_bytes:
        raise RangeNotSatisfiableError(
            f"range starts at {start} but the object has {size_bytes} bytes", size_bytes
        )
    return ByteSpan(start, min(end, size_bytes - 1))
