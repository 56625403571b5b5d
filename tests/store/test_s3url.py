"""One ``s3://`` URL type for the packager and the origin."""

from __future__ import annotations

import pytest

from cadenza.store.errors import BadS3UrlError
from cadenza.store.s3url import S3Url, is_s3_url, parse_s3_url


def test_prefixes_and_objects() -> None:
    assert parse_s3_url("s3://media/catalogue/", prefix=True) == S3Url("media", "catalogue")
    assert parse_s3_url("s3://media", prefix=True) == S3Url("media", "")
    assert parse_s3_url("S3://media/a/b.flac", prefix=False) == S3Url("media", "a/b.flac")
    assert is_s3_url("S3://x") and not is_s3_url("/s3://x")


def test_join_str_and_relative() -> None:
    root = S3Url("media", "lib")
    assert str(root.join("t", "presentation.json")) == "s3://media/lib/t/presentation.json"
    assert str(S3Url("media", "")) == "s3://media"
    assert S3Url("media", "").join("t").key == "t"
    assert root.relative("lib/t/a.m4s") == "t/a.m4s"
    assert root.listing_prefix == "lib/" and S3Url("media", "").listing_prefix == ""


@pytest.mark.parametrize(
    ("text", "prefix", "reason"),
    [
        ("/local/path", True, "not an s3:// URL"),
        ("s3://Bad_Bucket/x", True, "'Bad_Bucket' is not a bucket name"),
        ("s3://ab/x", True, "'ab' is not a bucket name"),
        ("s3://media", False, "names a folder, not an object"),
        ("s3://media/dir/", False, "names a folder, not an object"),
    ],
)
def test_bad_urls_say_why(text: str, prefix: bool, reason: str) -> None:
    with pytest.raises(BadS3UrlError) as info:
        parse_s3_url(text, prefix=prefix)
    assert info.value.text == text
    assert info.value.reason.startswith(reason)
    assert isinstance(info.value, ValueError)  # argument parsers treat it as a bad value
    assert str(info.value).startswith(f"{text!r}: {reason}")
