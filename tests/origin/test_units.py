"""Pure parts of the origin: Range parsing, path safety, settings precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.origin.errors import (
    ForbiddenPathError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    SettingsError,
)
from cadenza.origin.paths import safe_key
from cadenza.origin.ranges import ByteSpan, parse_range
from cadenza.origin.settings import load_settings
from cadenza.origin.steering import segment_duration_ms
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
