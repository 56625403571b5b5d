"""The HTTP ``Content-Type`` and ``Cache-Control`` of every file the packager writes.

One table for both sides: the origin serves files with these headers, and
``cadenza package --out s3://…`` stores objects with the same ones, so a CDN
reading the bucket directly sees what it would see through the origin.
Segments never change once written (immutable, a year); manifests are
rewritten when a track is repackaged (a short TTL).
"""

from __future__ import annotations

from typing import Final

CONTENT_TYPES: Final = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".mp4": "audio/mp4",
    ".m4s": "audio/mp4",
    ".json": "application/json",
}
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
MANIFEST_SUFFIXES: Final = frozenset({".m3u8", ".mpd", ".json"})
DEFAULT_MANIFEST_MAX_AGE_S: Final = 60
DEFAULT_SEGMENT_MAX_AGE_S: Final = 31_536_000  # a year


def suffix_of(key: str) -> str:
    """The lower-cased extension of the last path segment, with its dot ("" if none)."""
    name = key.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def is_manifest(key: str) -> bool:
    return suffix_of(key) in MANIFEST_SUFFIXES


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(suffix_of(key), DEFAULT_CONTENT_TYPE)


def cache_control_for(
    key: str,
    *,
    manifest_max_age_s: int = DEFAULT_MANIFEST_MAX_AGE_S,
    segment_max_age_s: int = DEFAULT_SEGMENT_MAX_AGE_S,
) -> str:
    if is_manifest(key):
        return f"public, max-age={manifest_max_age_s}"
    return f"public, max-age={segment_max_age_s}, immutable"
