"""``s3://bucket/key`` URLs: one parser for the packager's inputs and outputs and the
origin's ``ROOT``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cadenza.store.errors import BadS3UrlError

SCHEME: Final = "s3://"
# S3 bucket naming rules: 3-63 of a-z 0-9 . -, starting and ending with a letter or digit.
_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Url:
    """``s3://bucket/key``; for a prefix, ``key`` has no slash at either end ("" = the bucket)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    def join(self, *parts: str) -> S3Url:
        return S3Url(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p))

    def relative(self, key: str) -> str:
        """``key`` (a full object key below this prefix) without the prefix."""
        return key[len(self.key) + 1 :] if self.key else key

    @property
    def listing_prefix(self) -> str:
        """What a listing of the objects below this prefix asks for: ``key/`` or ""."""
        return f"{self.key}/" if self.key else ""


def is_s3_url(text: str) -> bool:
    return text[: len(SCHEME)].lower() == SCHEME


def parse_s3_url(text: str, *, prefix: bool) -> S3Url:
    """An object URL (``prefix=False``: the key must name an object, not a folder)
    or a prefix URL (``prefix=True``).  Raises :class:`BadS3UrlError` (a ValueError)
    with the reason."""
    if not is_s3_url(text):
        raise BadS3UrlError(text, "not an s3:// URL")
    bucket, _, key = text[len(SCHEME) :].partition("/")
    if not _BUCKET.match(bucket):
        raise BadS3UrlError(
            text,
            f"{bucket!r} is not a bucket name (3-63 of a-z 0-9 . -, "
            "starting and ending with a letter or digit)",
        )
    if prefix:
        return S3Url(bucket, key.strip("/"))
    if not key or key.endswith("/"):
        raise BadS3UrlError(text, "names a folder, not an object: give the object's key")
    return S3Url(bucket, key)
