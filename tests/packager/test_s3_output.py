"""``cadenza package --out s3://…``: upload order, headers, multipart, retries and
failures, against moto's S3 server on loopback with a logging, fault-injecting
proxy in front of it (tests/packager/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.manifests.media_types import cache_control_for, content_type_for, is_manifest
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PLAYLIST_NAME, PRESENTATION_NAME
from cadenza.packager.errors import StorageError
from cadenza.packager.ladder import load_ladder
from cadenza.packager.s3 import S3Destination
from cadenza.packager.track import PackageOptions, package_track
from cadenza.store.atomic import TMP_PREFIX
from cadenza.store.s3client import S3Settings
from cadenza.store.s3upload import upload_plan
from cadenza.store.s3url import S3Url
from tests.conftest import MakeInput, Moto, free_port
from tests.packager.conftest import Logged, S3Proxy, list_keys, s3_client

LADDER = """
name = "s3-test"
[[rung]]
codec = "aac"
bitrate_kbps = 64
[[rung]]
codec = "opus"
bitrate_kbps = 48
"""


@pytest.fixture
def ladder(tmp_path: Path) -> Path:
    path = tmp_path / "ladder.toml"
    path.write_text(LADDER, encoding="utf-8")
    return path


def _package(
    make_input: MakeInput, root: Path, ladder: Path, name: str, *, single_file: bool = False
) -> Path:
    options = PackageOptions(
        load_ladder(str(ladder)), segment_duration=Fraction(1), single_file=single_file
    )
    result = package_track(make_input("flac", 44100, 2, 4.0, name=name), root, options)
    assert result.status == "packaged", result.error
    return root / name


def _phase(key: str) -> int:
    """0 media, 1 media playlist, 2 MPD or master playlist, 3 presentation.json."""
    name = key.rsplit("/", 1)[-1]
    if name == PRESENTATION_NAME:
        return 3
    if name in (MPD_NAME, MASTER_NAME):
        return 2
    return 1 if name == PLAYLIST_NAME else 0


def assert_phases_in_order(puts: list[Logged]) -> None:
    """No PUT of a later phase arrived before every PUT of an earlier phase was answered."""
    assert {_phase(p.key) for p in puts} == {0, 1, 2, 3}
    for earlier in puts:
        for later in puts:
            if _phase(later.key) > _phase(earlier.key):
                assert earlier.answered < later.arrived, (earlier, later)


def test_upload_plan_puts_presentation_json_last(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    track = _package(make_input, tmp_path, ladder, "plan")
    phases = upload_plan(track)
    assert [sorted({_phase(f) for f in phase}) for phase in phases] == [[0], [1], [2], [3]]
    assert phases[-1] == [PRESENTATION_NAME]
    assert sorted(f for phase in phases for f in phase) == sorted(
        p.relative_to(track).as_posix() for p in track.rglob("*") if p.is_file()
    )


def test_segments_then_playlists_then_mpd_and_master_then_presentation_json(
    make_input: MakeInput, tmp_path: Path, ladder: Path, s3_bucket: str, s3_proxy: S3Proxy
) -> None:
    track = _package(make_input, tmp_path, ladder, "order")
    # A playlist an earlier packaging left is not deleted: a player may still hold a
    # playlist naming it (``cadenza gc`` removes it after its grace period).
    s3 = s3_client(s3_proxy.upstream)
    s3.put_object(Bucket=s3_bucket, Key="lib/order/old-rung/playlist.m3u8", Body=b"#EXTM3U\n")
    destination = S3Destination(
        S3Url(s3_bucket, "lib"), S3Settings(endpoint_url=s3_proxy.url, concurrency=4)
    )
    destination.publish(track, "order")

    puts = [e for e in s3_proxy.log if e.method == "PUT"]
    assert all(e.status == 200 for e in puts)
    assert_phases_in_order(puts)
    assert len([p for p in puts if _phase(p.key) == 0]) >= 10  # two rungs, 4 s, 1 s segments
    deletes = [e for e in s3_proxy.log if e.method == "POST" and "delete" in e.query]
    assert deletes == []

    files = sorted(p.relative_to(track).as_posix() for p in track.rglob("*") if p.is_file())
    assert list_keys(s3_proxy.upstream, s3_bucket) == sorted(
        [f"lib/order/{f}" for f in files] + ["lib/order/old-rung/playlist.m3u8"]
    )
    for name in files:
        head = s3.head_object(Bucket=s3_bucket, Key=f"lib/order/{name}")
        assert head["ContentType"] == content_type_for(name), name
        assert head["CacheControl"] == cache_control_for(name), name
        assert head["ContentLength"] == (track / name).stat().st_size
    heads = {
        name: s3.head_object(Bucket=s3_bucket, Key=f"lib/order/{name}")
        for name in ("aac-64k/init.mp4", "aac-64k/seg-00001.m4s", MASTER_NAME, MPD_NAME)
    }
    assert heads["aac-64k/init.mp4"]["ContentType"] == "audio/mp4"
    assert heads["aac-64k/seg-00001.m4s"]["CacheControl"] == "public, max-age=31536000, immutable"
    assert heads[MASTER_NAME]["ContentType"] == "application/vnd.apple.mpegurl"
    assert heads[MASTER_NAME]["CacheControl"] == "public, max-age=60"
    assert heads[MPD_NAME]["ContentType"] == "application/dash+xml"
    assert destination.complete(["order", "other"]) == {"order"}


def test_large_files_go_up_in_parts(
    make_input: MakeInput,
    tmp_path: Path,
    ladder: Path,
    s3_bucket: str,
    s3_proxy: S3Proxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto (in this process) enforces S3's 5 MiB smallest part; a test track is smaller.
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 1024)
    track = _package(make_input, tmp_path, ladder, "big", single_file=True)
    media = track / "aac-64k" / "media.mp4"
    size = media.stat().st_size
    part = 8 * 1024
    parts = -(-size // part)
    assert parts >= 3
    settings = S3Settings(
        endpoint_url=s3_proxy.url, multipart_threshold_bytes=2 * part, part_size_bytes=part
    )
    S3Destination(S3Url(s3_bucket, ""), settings).publish(track, "big")

    s3 = s3_client(s3_proxy.upstream)
    head = s3.head_object(Bucket=s3_bucket, Key="big/aac-64k/media.mp4")
    assert head["ETag"].endswith(f'-{parts}"')  # a multipart object's ETag counts its parts
    assert head["ContentLength"] == size
    assert head["ContentType"] == "audio/mp4"
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    body = s3.get_object(Bucket=s3_bucket, Key="big/aac-64k/media.mp4")["Body"].read()
    assert body == media.read_bytes()
    logged = [e for e in s3_proxy.log if e.key == "big/aac-64k/media.mp4"]
    assert [e.method for e in logged if "uploads" in e.query] == ["POST"]
    assert len([e for e in logged if e.method == "PUT" and "partNumber" in e.query]) == parts
    playlist = s3.head_object(Bucket=s3_bucket, Key="big/aac-64k/playlist.m3u8")
    assert "-" not in playlist["ETag"]  # small files: one PUT
    assert_phases_in_order([e for e in s3_proxy.log if e.method == "PUT"])


def test_throttled_requests_are_retried(
    make_input: MakeInput, tmp_path: Path, ladder: Path, s3_bucket: str, s3_proxy: S3Proxy
) -> None:
    """The first PUT of three objects (a segment, a playlist, presentation.json) is
    answered 503 SlowDown; each is sent again and the track completes."""
    track = _package(make_input, tmp_path, ladder, "flaky")
    victims = {
        "/flaky/aac-64k/seg-00002.m4s",
        "/flaky/opus-48k/playlist.m3u8",
        "/flaky/presentation.json",
    }
    failed: set[str] = set()

    def fault(method: str, path: str, query: str) -> int | None:
        key = path.removeprefix(f"/{s3_bucket}")
        if method == "PUT" and key in victims and key not in failed:
            failed.add(key)
            return 503
        return None

    s3_proxy.fault = fault
    destination = S3Destination(
        S3Url(s3_bucket, ""), S3Settings(endpoint_url=s3_proxy.url, max_attempts=3)
    )
    destination.publish(track, "flaky")
    assert failed == victims
    for key in victims:
        statuses = [e.status for e in s3_proxy.log if e.method == "PUT" and e.path.endswith(key)]
        assert statuses == [503, 200], key
    assert destination.complete(["flaky"]) == {"flaky"}
    assert_phases_in_order([e for e in s3_proxy.log if e.method == "PUT" and e.status == 200])


@pytest.mark.parametrize(
    "failing", ["aac-64k/init.mp4", "opus-48k/playlist.m3u8", MASTER_NAME, PRESENTATION_NAME]
)
def test_an_upload_that_keeps_failing_leaves_no_manifests(
    make_input: MakeInput,
    tmp_path: Path,
    ladder: Path,
    s3_bucket: str,
    s3_proxy: S3Proxy,
    failing: str,
) -> None:
    track = _package(make_input, tmp_path, ladder, "doomed")
    key = f"/{s3_bucket}/doomed/{failing}"
    s3_proxy.fault = lambda method, path, query: 503 if method == "PUT" and path == key else None
    destination = S3Destination(
        S3Url(s3_bucket, ""), S3Settings(endpoint_url=s3_proxy.url, max_attempts=2)
    )
    with pytest.raises(StorageError) as info:
        destination.publish(track, "doomed")
    assert str(info.value) == (
        f"s3://{s3_bucket}/doomed/{failing}: upload failed: SlowDown (HTTP 503) after 2 attempts"
    )
    assert [e.status for e in s3_proxy.log if e.path == key] == [503, 503]
    keys = list_keys(s3_proxy.upstream, s3_bucket)
    assert [k for k in keys if is_manifest(k)] == []
    assert destination.complete(["doomed"]) == set()


def test_a_track_whose_upload_fails_is_reported_and_the_batch_goes_on(
    make_input: MakeInput,
    tmp_path: Path,
    ladder: Path,
    s3_bucket: str,
    s3_proxy: S3Proxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 refuses (403, not retried) one track's presentation.json: that track is failed
    in the report with S3's reason and is not visible; the other completes."""
    sources = [make_input("flac", 44100, 2, 1.0, name=n) for n in ("kept", "refused")]
    refused = f"/{s3_bucket}/lib/refused/{PRESENTATION_NAME}"
    s3_proxy.fault = lambda method, path, query: 403 if (method, path) == ("PUT", refused) else None
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_proxy.url)
    staging = tmp_path / "staging"
    argv = [*map(str, sources), "--out", f"s3://{s3_bucket}/lib", "--ladder", str(ladder)]
    assert main(["package", *argv, "--staging", str(staging), "--jobs", "2"]) == 1
    report = json.loads((staging / "batch-report.json").read_text())
    by_id = {t["track_id"]: t for t in report["tracks"]}
    assert by_id["kept"]["status"] == "packaged"
    assert by_id["refused"]["status"] == "failed"
    assert by_id["refused"]["output"] is None
    assert by_id["refused"]["error"] == (
        f"{sources[1]}: s3://{s3_bucket}/lib/refused/{PRESENTATION_NAME}: "
        "upload failed: AccessDenied (HTTP 403)"
    )
    keys = list_keys(s3_proxy.upstream, s3_bucket, "lib/")
    assert f"lib/kept/{PRESENTATION_NAME}" in keys
    assert [k for k in keys if k.startswith("lib/refused/") and is_manifest(k)] == []
    puts = [e.status for e in s3_proxy.log if (e.method, e.path) == ("PUT", refused)]
    assert puts == [403]  # a refusal is not retried
    assert [p.name for p in staging.iterdir()] == ["batch-report.json"]


def test_unreachable_s3_is_a_storage_error(
    tmp_path: Path, make_input: MakeInput, ladder: Path
) -> None:
    track = _package(make_input, tmp_path, ladder, "nowhere")
    settings = S3Settings(
        endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=2, connect_timeout_s=1
    )
    with pytest.raises(StorageError, match="S3 unreachable"):
        S3Destination(S3Url("bucket", "x"), settings).publish(track, "nowhere")


def test_cadenza_package_to_s3_downloads_uploads_reports_and_resumes(
    make_input: MakeInput,
    tmp_path: Path,
    ladder: Path,
    s3_bucket: str,
    s3_proxy: S3Proxy,
    moto_server: Moto,
) -> None:
    """The command as operators run it: a CSV catalogue of a local master (relative to
    the catalogue) and two s3:// masters, one missing; output to s3://; then again."""
    s3 = s3_client(moto_server.url)
    masters = tmp_path / "masters"
    masters.mkdir()
    local = make_input("flac", 44100, 2, 2.0, name="local-one")
    (masters / local.name).write_bytes(local.read_bytes())
    remote = make_input("wav", 48000, 2, 2.0, name="remote-master")
    s3.put_object(Bucket=s3_bucket, Key="in/remote-master.wav", Body=remote.read_bytes())
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "track_id,source\n"
        f",masters/{local.name}\n"
        f"remote,s3://{s3_bucket}/in/remote-master.wav\n"
        f"missing,s3://{s3_bucket}/in/nope.flac\n",
        encoding="utf-8",
    )
    staging = tmp_path / "staging"
    argv = [
        sys.executable,
        "-m",
        "cadenza",
        "package",
        "--catalogue",
        str(catalogue),
        "--out",
        f"s3://{s3_bucket}/music/",
        "--ladder",
        str(ladder),
        "--segment-duration",
        "1",
        "--staging",
        str(staging),
        "--jobs",
        "2",
    ]
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_proxy.url}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 1, done.stderr  # the missing master failed; the others did not

    keys = list_keys(moto_server.url, s3_bucket, "music/")
    assert {k.split("/")[1] for k in keys} == {"local-one", "remote", ".cadenza"}, done.stderr
    for track in ("local-one", "remote"):
        prefix = f"music/{track}/"
        assert_phases_in_order([e for e in s3_proxy.log if e.method == "PUT" and prefix in e.path])
        assert f"music/{track}/{PRESENTATION_NAME}" in keys
    presentation = json.loads(
        s3.get_object(Bucket=s3_bucket, Key=f"music/remote/{PRESENTATION_NAME}")["Body"].read()
    )
    assert presentation["track_id"] == "remote"
    assert presentation["source"]["file_name"] == "remote-master.wav"
    report = json.loads(
        s3.get_object(Bucket=s3_bucket, Key="music/.cadenza/batch-report.json")["Body"].read()
    )
    assert report == json.loads((staging / "batch-report.json").read_text())
    by_id = {t["track_id"]: t for t in report["tracks"]}
    assert report["summary"] == {"packaged": 2, "skipped": 0, "failed": 1}
    assert by_id["remote"]["output"] == f"s3://{s3_bucket}/music/remote"
    assert by_id["remote"]["input"] == f"s3://{s3_bucket}/in/remote-master.wav"
    assert by_id["missing"]["error"] == f"s3://{s3_bucket}/in/nope.flac: no such object in S3"
    # Nothing is left in staging but the report.
    assert [p.name for p in staging.iterdir()] == ["batch-report.json"]

    modified = {
        k: s3.head_object(Bucket=s3_bucket, Key=k)["LastModified"]
        for k in keys
        if k.endswith(PRESENTATION_NAME)
    }
    puts_before = len([e for e in s3_proxy.log if e.method == "PUT"])
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert again.returncode == 1, again.stderr
    report = json.loads((staging / "batch-report.json").read_text())
    assert {t["track_id"]: t["status"] for t in report["tracks"]} == {
        "local-one": "skipped",
        "remote": "skipped",
        "missing": "failed",
    }
    for key, when in modified.items():
        assert s3.head_object(Bucket=s3_bucket, Key=key)["LastModified"] == when
    # The rerun uploaded the report and nothing else.
    new_puts = [e.key for e in s3_proxy.log if e.method == "PUT"][puts_before:]
    assert new_puts == ["music/.cadenza/batch-report.json"]
    assert not list(staging.glob(f"{TMP_PREFIX}*"))


def test_a_missing_bucket_is_a_usage_error(
    tmp_path: Path,
    make_input: MakeInput,
    moto_server: Moto,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    argv = ["package", str(make_input()), "--out", "s3://no-such-bucket/x"]
    assert main([*argv, "--staging", str(tmp_path / "staging")]) == 2
    assert "s3://no-such-bucket: opening the bucket failed: 404" in capsys.readouterr().err
