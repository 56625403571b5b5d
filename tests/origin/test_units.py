"""Pure parts of the origin: Range parsing, path safety, settings precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.abr.guidance import segment_duration_ms
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.origin.core.request import VersionVerdict, accepts_gzip, check_version
from cadenza.origin.core.routes import RouteClass, is_track_manifest, route_class
from cadenza.origin.errors import (
    ForbiddenPathError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    SettingsError,
)
from cadenza.origin.paths import safe_key
from cadenza.origin.ranges import ByteSpan, parse_range
from cadenza.origin.settings import load_settings
from cadenza.origin.storage import LocalStorage
from tests.origin.conftest import TRACK


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", ByteSpan(0, 0)),
        ("bytes=10-", ByteSpan(10, 99)),
        ("bytes=-10", ByteSpan(90, 99)),
        ("bytes=-500", ByteSpan(0, 99)),
        ("bytes=90-500", ByteSpan(90, 99)),
        ("BYTES = 1-2", ByteSpan(1, 2)),
    ],
)
def test_range_forms_of_rfc_9110(header: str, expected: ByteSpan) -> None:
    """RFC 9110 14.1.2: first-last, open, suffix; last is clamped to the size."""
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=5-2",
        "items=1-2",
        "bytes=1-2,4-5",
        "bytes=" + "9" * 300,
    ],
)
def test_malformed_or_multi_ranges_mean_whole_object(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges_raise_with_the_size(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError) as error:
        parse_range(header, 100)
    assert error.value.size_bytes == 100


@given(st.text(max_size=60), st.integers(0, 10**9))
def test_range_parser_never_raises_anything_else(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if span is not None:
        assert 0 <= span.start <= span.end < size


@pytest.mark.parametrize("path", ["/t/master.m3u8", "/t/aac-128k/seg-00001.m4s", "/a.b_c-d/x"])
def test_plain_paths_become_keys(path: str) -> None:
    assert safe_key(path) == path[1:]


@pytest.mark.parametrize(
    "path",
    [
        "/t/../x",
        "/t/%2e%2e/x",
        "/t/%2E%2E/x",
        "/t/..%2fx",
        "/t%5c..%5cx",
        "/t/a%00",
        "/t//x",
        "/t/.cadenza-tmp-x/a",
        "/t/\u00e9",
        "/t/%ff",
        "t/x",
        "/" + "a" * 2000,
        "/t/a b",
        "/t/master.m3u8\n",  # "$" would match before a final newline; "\\Z" does not
        "/t/master.m3u8%0a",
    ],
)
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(ForbiddenPathError):
        safe_key(path)


@given(st.text(max_size=80))
def test_any_accepted_key_stays_inside_root(text: str) -> None:
    try:
        key = safe_key("/" + text)
    except ForbiddenPathError:
        return
    assert ".." not in key.split("/")
    assert not key.startswith("/")
    assert "\\" not in key


def test_cli_beats_env_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "cadenza.origin.toml"
    config.write_text("port = 7000\nmanifest_max_age_s = 9\nworkers = 3\n", encoding="utf-8")
    settings = load_settings(
        {"root": "/srv", "port": 9000},
        env={"CADENZA_PORT": "8000", "CADENZA_WORKERS": "2"},
        config_file=config,
    )
    assert (settings.port, settings.workers, settings.manifest_max_age_s) == (9000, 2, 9)


def test_unknown_toml_setting_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "cadenza.origin.toml"
    config.write_text("prot = 1\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({"root": "/srv"}, env={}, config_file=config)


def test_bad_env_value_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="port"):
        load_settings({"root": "/srv"}, env={"CADENZA_PORT": "eighty"})


def test_root_is_required() -> None:
    with pytest.raises(SettingsError, match="root"):
        load_settings({}, env={})


def test_aws_endpoint_url_is_honoured() -> None:
    settings = load_settings({"root": "s3://b/p"}, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert settings.s3_endpoint_url == "http://127.0.0.1:9"
    assert settings.is_s3


async def test_open_refuses_a_symlink_that_leaves_the_root(tmp_path: Path) -> None:
    """Large files are streamed from an open handle: it must get the same
    containment check as every other read, not a join of root and key."""
    root, outside = tmp_path / "root", tmp_path / "secret.m4s"
    (root / "t").mkdir(parents=True)
    outside.write_bytes(b"secret")
    (root / "t" / "1.m4s").symlink_to(outside)
    with pytest.raises(ObjectNotFoundError):
        await LocalStorage(root).open("t/1.m4s")


async def test_open_describes_the_inode_it_will_read(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    target = tmp_path / "t" / "1.m4s"
    target.write_bytes(b"old bytes")
    handle, info = await LocalStorage(tmp_path).open("t/1.m4s")
    with handle:
        replacement = tmp_path / "t" / "new"
        replacement.write_bytes(b"a longer replacement")
        replacement.replace(target)  # a repackage renames over it mid-send
        assert (info.size_bytes, handle.read()) == (9, b"old bytes")


async def test_open_of_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError):
        await LocalStorage(tmp_path).open("t/none.m4s")


def test_segment_durations_are_found_by_number(packaged_root: Path) -> None:
    """CMSD-Static's duration comes from the model, by the file's number."""
    presentation = presentation_from_json((packaged_root / TRACK / PRESENTATION_NAME).read_bytes())
    rendition = presentation.renditions[0]
    assert len(rendition.segments) >= 3
    for segment in rendition.segments:
        expected = segment.duration_ticks * 1000 // rendition.timescale
        assert segment_duration_ms(rendition, f"seg-{segment.number:05d}.m4s") == expected
    last = rendition.segments[-1].number
    assert segment_duration_ms(rendition, f"seg-{last + 1:05d}.m4s") is None
    assert segment_duration_ms(rendition, "init.mp4") is None


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP;Q=1.0", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=0.001", True),
        ("gzip;q=1.001", False),  # not a qvalue: the member is ignored
        ("gzip;q=abc", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # gzip named: its weight wins over *'s
        ("identity", False),
    ],
)
def test_accept_encoding_weights(header: str | None, gzip: bool) -> None:
    """RFC 9110 12.5.3 and 12.4.2."""
    assert accepts_gzip(header) is gzip


@pytest.mark.parametrize(
    ("version", "verdict"),
    [
        ((1, 1), VersionVerdict.OK),
        ((1, 0), VersionVerdict.OK),
        ((0, 9), VersionVerdict.BAD_REQUEST),
        ((2, 0), VersionVerdict.NOT_SUPPORTED),
    ],
)
def test_http_versions(version: tuple[int, int], verdict: VersionVerdict) -> None:
    assert check_version(*version) is verdict


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/healthz", RouteClass.HEALTHZ),
        ("/metrics", RouteClass.METRICS),
        ("/", RouteClass.APP),
        ("/player/", RouteClass.APP),
        ("/v1/sessions", RouteClass.APP),
        (f"/{TRACK}/master.m3u8", RouteClass.MANIFEST),
        (f"/{TRACK}/manifest.mpd", RouteClass.MANIFEST),
        (f"/{TRACK}/aac-128k/seg-00001.m4s", RouteClass.SEGMENT),
        (f"/{TRACK}/aac-128k/init.mp4", RouteClass.SEGMENT),
        (f"/{TRACK}/aac-128k/init.MP4", RouteClass.OTHER),
        (f"/{TRACK}/presentation.json", RouteClass.OTHER),
        (f"/{TRACK}/aac-128k", RouteClass.OTHER),
    ],
)
def test_route_classes(path: str, route: RouteClass) -> None:
    assert route_class(path) is route


def test_track_manifests_are_the_ones_at_a_tracks_top() -> None:
    assert is_track_manifest(f"{TRACK}/master.m3u8")
    assert is_track_manifest(f"{TRACK}/manifest.mpd")
    assert not is_track_manifest(f"{TRACK}/aac-128k/master.m3u8")
    assert not is_track_manifest("master.m3u8")
    assert not is_track_manifest(f"{TRACK}/aac-128k/playlist.m3u8")
