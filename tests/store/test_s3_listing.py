"""Regression: the origin listed half-uploaded S3 tracks.

Its listing took every folder under the prefix as a track, so a track whose upload had
not yet reached ``presentation.json`` (which goes up last) appeared in ``/v1/tracks``.
The store has one definition of a complete track, used by the origin's listing and the
packager's rerun check alike; here both are asked about the same bucket, on a real
moto server on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cadenza.origin.app import create_app
from cadenza.origin.settings import Settings
from cadenza.store.api import TrackReader, TrackWriter
from cadenza.store.errors import ObjectMissingError
from cadenza.store.s3client import S3Settings
from cadenza.store.s3read import S3Store
from cadenza.store.s3url import S3Url
from cadenza.store.s3write import S3TrackWriter
from tests.conftest import Moto

BUCKET = "cadenza-store"
PREFIX = "lib"
GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "presentation.json"
SEGMENT = b"\x00\x00\x00\x08moof"
OBJECTS = {
    # complete: presentation.json is there and parses
    "whole/aac-64k/seg-00001.m4s": SEGMENT,
    "whole/aac-64k/playlist.m3u8": b"#EXTM3U\n",
    "whole/presentation.json": GOLDEN.read_bytes(),
    # an upload in progress: media, playlists and master up, presentation.json not yet
    "half/aac-64k/seg-00001.m4s": SEGMENT,
    "half/aac-64k/playlist.m3u8": b"#EXTM3U\n",
    "half/master.m3u8": b"#EXTM3U\n",
    # a presentation.json that does not parse
    "damaged/presentation.json": GOLDEN.read_bytes()[:100],
    # the batch report's hidden folder
    ".cadenza/batch-report.json": b"{}",
}


@pytest.fixture(scope="module")
def moto_bucket() -> Iterator[Moto]:
    server = Moto()
    server.start()
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=body)
    try:
        yield server
    finally:
        server.stop()


def _settings(moto: Moto) -> S3Settings:
    return S3Settings(endpoint_url=moto.url, max_attempts=2, connect_timeout_s=2, read_timeout_s=2)


async def test_the_store_lists_only_complete_tracks(moto_bucket: Moto) -> None:
    store = S3Store(S3Url(BUCKET, PREFIX), _settings(moto_bucket))
    reader: TrackReader = store  # the read face, checked by mypy
    assert reader.name == "s3"
    await store.connect()
    try:
        assert await store.list_tracks() == ["whole"]
        stored = await store.read("half/master.m3u8")  # its objects are there all the same
        assert stored.body == b"#EXTM3U\n"
        assert stored.info.size_bytes == 8
        assert await store.read_range("whole/aac-64k/seg-00001.m4s", 4, 7) == b"moof"
        with pytest.raises(ObjectMissingError) as info:
            await store.head("half/presentation.json")
        assert info.value.key == "half/presentation.json"
    finally:
        await store.close()


async def test_the_origin_does_not_list_half_uploaded_tracks(moto_bucket: Moto) -> None:
    settings = Settings(root=f"s3://{BUCKET}/{PREFIX}", s3_endpoint_url=moto_bucket.url)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        response = await client.get("/v1/tracks")
        assert response.status == 200
        assert await response.json() == {"tracks": ["whole"]}
    finally:
        await client.close()


def test_the_packager_rerun_check_agrees(moto_bucket: Moto) -> None:
    writer: TrackWriter = S3TrackWriter(S3Url(BUCKET, PREFIX), _settings(moto_bucket))
    asked = ["whole", "half", "damaged", "absent"]
    assert writer.complete(asked) == {"whole"}
    assert writer.complete([]) == set()
    assert writer.location("half") == f"s3://{BUCKET}/{PREFIX}/half"


def test_deleting_a_track_hides_it_presentation_json_first(moto_bucket: Moto) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_bucket.url, region_name="us-east-1")
    for key, body in OBJECTS.items():
        if key.startswith("whole/"):
            s3.put_object(Bucket=BUCKET, Key=f"gone/{key}", Body=body)
    writer = S3TrackWriter(S3Url(BUCKET, "gone"), _settings(moto_bucket))
    assert writer.complete(["whole"]) == {"whole"}
    writer.delete_track("whole")
    assert writer.complete(["whole"]) == set()
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix="gone/")["Contents"]
    assert [o["Key"] for o in left] == ["gone/whole/aac-64k/seg-00001.m4s"]  # media stays
