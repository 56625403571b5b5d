"""HTTP semantics a CDN and browser players rely on, on local disk and on S3."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import m3u8
import pytest
from lxml import etree

from cadenza.manifests.media_types import cache_control_for, content_type_for
from tests.origin.conftest import TRACK, MakeClient

pytestmark = pytest.mark.asyncio
SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"
SCHEMA_PATH = "tests/data/schemas/DASH-MPD.xsd"


async def _get(make_client: MakeClient, backend: str, path: str, **headers: str) -> Any:
    client = await make_client(backend)
    return await client.get(path, headers=headers)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (f"/{TRACK}/master.m3u8", "application/vnd.apple.mpegurl"),
        (f"/{TRACK}/aac-128k/playlist.m3u8", "application/vnd.apple.mpegurl"),
        (f"/{TRACK}/manifest.mpd", "application/dash+xml"),
        (f"/{TRACK}/aac-128k/init.mp4", "audio/mp4"),
        (SEGMENT, "audio/mp4"),
        (f"/{TRACK}/presentation.json", "application/json"),
    ],
)
async def test_content_types(
    make_client: MakeClient, backend: str, path: str, content_type: str
) -> None:
    response = await _get(make_client, backend, path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type


async def test_every_packaged_file_is_served_with_the_upload_headers(
    make_client: MakeClient, packaged_root: Path
) -> None:
    """The origin and ``cadenza package --out s3://`` must agree on every file's
    Content-Type and Cache-Control: a CDN may read either."""
    client = await make_client()
    files = [p for p in sorted((packaged_root / TRACK).rglob("*")) if p.is_file()]
    assert len(files) > 10
    for path in files:
        key = path.relative_to(packaged_root).as_posix()
        response = await client.get(f"/{key}")
        assert response.status == 200, key
        assert response.headers["Content-Type"] == content_type_for(key), key
        assert response.headers["Cache-Control"] == cache_control_for(key), key


async def test_segments_are_immutable(make_client: MakeClient, backend: str) -> None:
    response = await _get(make_client, backend, SEGMENT)
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_manifests_have_a_short_configurable_ttl(make_client: MakeClient) -> None:
    client = await make_client("local", manifest_max_age_s=7)
    response = await client.get(f"/{TRACK}/master.m3u8")
    assert response.headers["Cache-Control"] == "public, max-age=7"


async def test_segment_bytes_match_the_file(
    make_client: MakeClient, backend: str, packaged_root: Any
) -> None:
    response = await _get(make_client, backend, SEGMENT)
    assert await response.read() == (packaged_root / SEGMENT.lstrip("/")).read_bytes()


async def test_if_none_match_gives_304_without_body(make_client: MakeClient, backend: str) -> None:
    """RFC 9110 13.1.2."""
    client = await make_client(backend)
    first = await client.get(SEGMENT)
    etag = first.headers["ETag"]
    assert etag.startswith('"')  # strong
    second = await client.get(SEGMENT, headers={"If-None-Match": etag})
    assert second.status == 304
    assert await second.read() == b""


async def test_if_modified_since_gives_304(make_client: MakeClient, backend: str) -> None:
    """RFC 9110 13.1.3."""
    client = await make_client(backend)
    first = await client.get(SEGMENT)
    second = await client.get(
        SEGMENT, headers={"If-Modified-Since": first.headers["Last-Modified"]}
    )
    assert second.status == 304


@pytest.mark.parametrize(
    ("if_match", "status"),
    [("{etag}", 200), ('"other", {etag}', 200), ("*", 200), ('"other"', 412), ("W/{etag}", 412)],
    ids=["same", "listed", "any", "other", "weak"],
)
async def test_if_match_is_compared_strongly(
    make_client: MakeClient, backend: str, if_match: str, status: int
) -> None:
    """RFC 9110 13.1.1: a strong comparison; a weak tag never matches."""
    client = await make_client(backend)
    etag = (await client.get(SEGMENT)).headers["ETag"]
    response = await client.get(SEGMENT, headers={"If-Match": if_match.format(etag=etag)})
    assert response.status == status
    if status == 412:
        assert (await response.json())["error"] == "precondition_failed"


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("{last_modified}", 200),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 412),
        ("not a date", 200),  # ignored (RFC 9110 13.1.4)
    ],
    ids=["unchanged", "changed-since", "invalid"],
)
async def test_if_unmodified_since(
    make_client: MakeClient, backend: str, since: str, status: int
) -> None:
    """RFC 9110 13.1.4."""
    client = await make_client(backend)
    last_modified = (await client.get(SEGMENT)).headers["Last-Modified"]
    response = await client.get(
        SEGMENT, headers={"If-Unmodified-Since": since.format(last_modified=last_modified)}
    )
    assert response.status == status


async def test_if_match_wins_over_if_unmodified_since(make_client: MakeClient) -> None:
    """RFC 9110 13.2.2: If-Unmodified-Since is evaluated only without If-Match."""
    client = await make_client()
    etag = (await client.get(SEGMENT)).headers["ETag"]
    response = await client.get(
        SEGMENT,
        headers={"If-Match": etag, "If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
    )
    assert response.status == 200


async def test_a_failed_if_match_wins_over_if_none_match(make_client: MakeClient) -> None:
    """RFC 9110 13.2.2: step 1 (412) before step 3 (304)."""
    client = await make_client()
    etag = (await client.get(SEGMENT)).headers["ETag"]
    response = await client.get(SEGMENT, headers={"If-Match": '"other"', "If-None-Match": etag})
    assert response.status == 412


async def test_if_match_applies_to_objects_too_large_to_cache(make_client: MakeClient) -> None:
    """The streamed path (objects over the cache's limit) checks it too."""
    client = await make_client("local", cache_max_object_bytes=16)
    response = await client.get(SEGMENT, headers={"If-Match": '"other"'})
    assert response.status == 412


async def test_single_range_gives_206(make_client: MakeClient, backend: str) -> None:
    """RFC 9110 14.4: Content-Range on a 206."""
    client = await make_client(backend)
    whole = await (await client.get(SEGMENT)).read()
    response = await client.get(SEGMENT, headers={"Range": "bytes=10-19"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
    assert await response.read() == whole[10:20]


async def test_open_range(make_client: MakeClient, backend: str) -> None:
    client = await make_client(backend)
    whole = await (await client.get(SEGMENT)).read()
    response = await client.get(SEGMENT, headers={"Range": "bytes=100-"})
    assert await response.read() == whole[100:]


async def test_suffix_range(make_client: MakeClient, backend: str) -> None:
    client = await make_client(backend)
    whole = await (await client.get(SEGMENT)).read()
    response = await client.get(SEGMENT, headers={"Range": "bytes=-50"})
    assert await response.read() == whole[-50:]


async def test_unsatisfiable_range_gives_416(make_client: MakeClient, backend: str) -> None:
    client = await make_client(backend)
    whole = await (await client.get(SEGMENT)).read()
    response = await client.get(SEGMENT, headers={"Range": "bytes=99999999-"})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{len(whole)}"


@pytest.mark.parametrize(
    "header", ["bytes=abc", "pages=1-2", "bytes=5-1", "bytes 1-2", "bytes=--1"]
)
async def test_malformed_range_is_ignored(make_client: MakeClient, header: str) -> None:
    """RFC 9110 14.2: a server may ignore an invalid Range and send 200."""
    response = await _get(make_client, "local", SEGMENT, Range=header)
    assert response.status == 200
    assert response.headers["Accept-Ranges"] == "bytes"


async def test_head_has_headers_and_no_body(make_client: MakeClient, backend: str) -> None:
    client = await make_client(backend)
    get = await client.get(SEGMENT)
    body = await get.read()
    head = await client.head(SEGMENT)
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(body)
    assert head.headers["ETag"] == get.headers["ETag"]
    assert await head.read() == b""


async def test_manifest_is_gzipped_when_accepted(make_client: MakeClient, backend: str) -> None:
    client = await make_client(backend)
    response = await client.get(
        f"/{TRACK}/manifest.mpd", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"].startswith("Accept-Encoding")
    assert gzip.decompress(await response.read()).startswith(b"<?xml")


async def test_segments_are_never_compressed(make_client: MakeClient) -> None:
    response = await _get(make_client, "local", SEGMENT, **{"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers


async def test_cors_headers_on_every_response(make_client: MakeClient) -> None:
    response = await _get(make_client, "local", SEGMENT, Origin="http://player.example")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = response.headers["Access-Control-Expose-Headers"]
    for name in ("Content-Length", "Content-Range", "CMSD-Static", "CMSD-Dynamic"):
        assert name in exposed


async def test_cors_origin_is_configurable(make_client: MakeClient) -> None:
    client = await make_client("local", cors_allow_origin="https://app.example")
    response = await client.get(SEGMENT)
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in response.headers["Vary"]


async def test_preflight_allows_range_and_cmcd_headers(make_client: MakeClient) -> None:
    client = await make_client("local")
    response = await client.options(
        SEGMENT,
        headers={
            "Origin": "http://player.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range,cmcd-request",
        },
    )
    assert response.status == 204
    allowed = response.headers["Access-Control-Allow-Headers"]
    for name in ("Range", "CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session"):
        assert name in allowed


async def test_cmcd_query_does_not_change_bytes_or_validators(
    make_client: MakeClient, backend: str
) -> None:
    client = await make_client(backend)
    plain = await client.get(SEGMENT)
    with_cmcd = await client.get(
        SEGMENT + "?CMCD=br%3D128%2Cbl%3D4000%2Csid%3D%22abc%22",
        headers={"CMCD-Request": "bl=4000"},
    )
    assert await with_cmcd.read() == await plain.read()
    assert with_cmcd.headers["ETag"] == plain.headers["ETag"]


async def test_codec_filter_on_master(make_client: MakeClient, backend: str) -> None:
    response = await _get(make_client, backend, f"/{TRACK}/master.m3u8?codec=opus,flac")
    playlists = m3u8.loads(await response.text()).playlists
    assert {p.stream_info.codecs for p in playlists} == {"opus", "fLaC"}


async def test_a_repeated_filter_key_filters_by_the_value_it_is_cached_under(
    make_client: MakeClient,
) -> None:
    """Rendered manifests are cached by their filter values: with ``codec`` given
    twice, the filter and the cache key must read the same one (the first), or
    the next plain ``?codec=opus`` would be served FLAC bytes."""
    client = await make_client()
    repeated = await client.get(f"/{TRACK}/master.m3u8?codec=opus&codec=flac")
    single = await client.get(f"/{TRACK}/master.m3u8?codec=opus")
    for response in (repeated, single):
        playlists = m3u8.loads(await response.text()).playlists
        assert {p.stream_info.codecs for p in playlists} == {"opus"}


async def test_bitrate_filter_on_mpd_stays_schema_valid(make_client: MakeClient) -> None:
    response = await _get(
        make_client, "local", f"/{TRACK}/manifest.mpd?min_bitrate=100&max_bitrate=300"
    )
    document = etree.fromstring(await response.read())
    schema = etree.XMLSchema(etree.parse(SCHEMA_PATH))
    assert schema.validate(document), schema.error_log
    bandwidths = [int(str(r.get("bandwidth"))) for r in document.iter("{*}Representation")]
    assert bandwidths and all(90_000 < b < 350_000 for b in bandwidths)


async def test_a_repackaged_track_is_not_served_a_stale_rendered_manifest(
    make_client: MakeClient, packaged_root: Path, tmp_path: Path
) -> None:
    """Rendered manifests are kept by shape; the shape includes the version of
    presentation.json, so a repackage (here: same rungs, a new peak bitrate)
    shows at once."""
    root = tmp_path / "root"
    shutil.copytree(packaged_root, root)
    client = await make_client(root=str(root), manifest_max_age_s=0)
    url = f"/{TRACK}/master.m3u8?codec=aac"
    first = await (await client.get(url)).text()
    assert first == await (await client.get(url)).text()
    assert "BANDWIDTH=9876543," not in first
    model = root / TRACK / "presentation.json"
    data = json.loads(model.read_text(encoding="utf-8"))
    (rung,) = [r for r in data["renditions"] if r["id"] == "aac-128k"]
    rung["bitrate_bps"]["peak"] = 9_876_543
    model.write_text(json.dumps(data), encoding="utf-8")
    second = await (await client.get(url)).text()
    assert "BANDWIDTH=9876543," in second


async def test_filter_matching_nothing_is_404_with_reason(make_client: MakeClient) -> None:
    response = await _get(make_client, "local", f"/{TRACK}/master.m3u8?codec=flac&max_bitrate=64")
    assert response.status == 404
    assert (await response.json())["error"] == "no_matching_renditions"


async def test_bad_filter_is_400(make_client: MakeClient) -> None:
    response = await _get(make_client, "local", f"/{TRACK}/master.m3u8?codec=mp3")
    assert response.status == 400
    assert "mp3" in (await response.json())["detail"]


async def test_missing_file_is_json_404(make_client: MakeClient, backend: str) -> None:
    response = await _get(make_client, backend, f"/{TRACK}/aac-128k/seg-99999.m4s")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        f"/{TRACK}/../../etc/passwd",
        f"/{TRACK}/%2e%2e/%2e%2e/etc/passwd",
        f"/{TRACK}/..%2f..%2fetc%2fpasswd",
        f"/{TRACK}/..%5c..%5cetc%5cpasswd",
        f"/{TRACK}/a%00b",
        "/%2Fetc/passwd",
        f"/{TRACK}/.hidden",
        f"/{TRACK}/",
    ],
)
async def test_path_traversal_never_reads_outside_root(make_client: MakeClient, path: str) -> None:
    client = await make_client("local")
    response = await client.get(path)
    assert response.status in (400, 404)
    assert b"root:" not in await response.read()


async def test_symlink_pointing_out_of_root_is_not_followed(
    make_client: MakeClient, packaged_root: Any, tmp_path: Any
) -> None:
    secret = tmp_path / "secret.m4s"
    secret.write_bytes(b"top secret")
    link = packaged_root / TRACK / "leak.m4s"
    link.symlink_to(secret)
    try:
        response = await _get(make_client, "local", f"/{TRACK}/leak.m4s")
        assert response.status == 404
    finally:
        link.unlink()


async def test_no_directory_listing(make_client: MakeClient) -> None:
    response = await _get(make_client, "local", f"/{TRACK}/aac-128k")
    assert response.status == 404


async def test_post_is_refused_with_json(make_client: MakeClient) -> None:
    client = await make_client("local")
    response = await client.post(SEGMENT, data=b"x")
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"


async def test_health_and_readiness(make_client: MakeClient, backend: str) -> None:
    client = await make_client(backend)
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_second_read_is_a_hot_cache_hit(make_client: MakeClient) -> None:
    client = await make_client("local")
    first = await client.get(SEGMENT)
    second = await client.get(SEGMENT)
    assert (first.headers["X-Cadenza-Cache"], second.headers["X-Cadenza-Cache"]) == ("miss", "hit")


async def test_metrics_count_requests_by_route_and_cache(make_client: MakeClient) -> None:
    client = await make_client("local")
    await client.get(SEGMENT)
    await client.get(SEGMENT)
    text = await (await client.get("/metrics")).text()
    assert 'cadenza_requests_total{cache="hit",route="segment",status="200"} 1.0' in text
    assert 'cadenza_hot_cache_lookups_total{result="miss"} 1.0' in text
    assert "cadenza_request_duration_seconds_bucket" in text
    assert "cadenza_response_bytes_total" in text


async def test_path_below_a_file_is_not_found(make_client: MakeClient) -> None:
    """``track/presentation.json/x`` names nothing: 404, not a storage outage."""
    response = await _get(make_client, "local", f"/{TRACK}/presentation.json/x.m4s")
    assert response.status == 404
