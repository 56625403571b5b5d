"""Request path safety: a request may name only a plain relative file below ROOT."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

from cadenza.origin.errors import ForbiddenPathError

MAX_PATH_CHARS: Final = 1024
_SEGMENT: Final = re.compile(r"\A[A-Za-z0-9._-]+\Z")
_ENCODED_SEPARATOR: Final = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def safe_key(raw_path: str) -> str:
    """The storage key (``track/rendition/file``) for a raw, still-encoded URL path.

    Rejected with 400: encoded slashes, backslashes or NUL; ``.`` and ``..``
    segments (also percent-encoded); empty segments; hidden names (``.x``, so
    the packager's working folders are never served); characters outside
    ``[A-Za-z0-9._-]`` (which is all the packager writes); overlong paths.
    """
    path = raw_path.split("?", 1)[0]
    if len(path) > MAX_PATH_CHARS:
        raise ForbiddenPathError("path is too long")
    if _ENCODED_SEPARATOR.search(path):
        raise ForbiddenPathError("encoded separators or NUL are not allowed in paths")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise ForbiddenPathError("path is not valid UTF-8") from None
    if "\\" in decoded or "\x00" in decoded:
        raise ForbiddenPathError("backslashes and NUL are not allowed in paths")
    if not decoded.startswith("/"):
        raise ForbiddenPathError("path must be absolute")
    segments = decoded[1:].split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ForbiddenPathError("empty, '.' and '..' path segments are not allowed")
        if segment.startswith(".") or not _SEGMENT.match(segment):
            raise ForbiddenPathError(f"path segment {segment[:40]!r} is not allowed")
    return "/".join(segments)
