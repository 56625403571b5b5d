"""Re-runs and republishing with ``--out s3://``, against moto's S3 server behind the
logging, fault-injecting proxy (tests/packager/conftest.py): a re-run skips by
fingerprint, a republish adds a new set of objects beside the published one and
replaces only the three fixed-name manifests, after the new set is whole, and
``cadenza gc s3://…`` removes the old set after the grace period."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PRESENTATION_NAME, Presentation
from cadenza.packager.gc import referenced_names
from tests.conftest import MakeInput
from tests.packager.conftest import S3Proxy, list_keys, s3_client

LADDER = '[[rung]]\ncodec = "aac"\nbitrate_kbps = 64\n'
FIXED = {f"lib/song/{n}" for n in (MASTER_NAME, MPD_NAME, PRESENTATION_NAME)}


@pytest.fixture
def setup(
    make_input: MakeInput, tmp_path: Path, s3_proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_proxy.url)
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER, encoding="utf-8")
    source = tmp_path / "song.flac"
    shutil.copyfile(make_input("flac", 44100, 2, 1.0), source)
    return ladder, source


def _package(bucket: str, tmp_path: Path, ladder: Path, source: Path, *extra: str) -> int:
    staging = tmp_path / "staging"
    (staging / "batch-report.json").unlink(missing_ok=True)  # keep only this run's
    args = [str(source), "--out", f"s3://{bucket}/lib", "--ladder", str(ladder)]
    return main(["package", *args, "--staging", str(staging), "--jobs", "1", *extra])


def _track(tmp_path: Path) -> dict[str, object]:
    report = json.loads((tmp_path / "staging" / "batch-report.json").read_text())
    [track] = report["tracks"]
    assert isinstance(track, dict)
    return track


def _presentation(proxy: S3Proxy, bucket: str) -> Presentation:
    body = s3_client(proxy.upstream).get_object(Bucket=bucket, Key=f"lib/song/{PRESENTATION_NAME}")
    return presentation_from_json(body["Body"].read())


def _etags(proxy: S3Proxy, bucket: str) -> dict[str, str]:
    """The track's objects and their ETags."""
    client = s3_client(proxy.upstream)
    keys = list_keys(proxy.upstream, bucket, "lib/song/")
    return {k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in keys}


def test_rerun_skips_republish_adds_beside_and_gc_removes_the_old_set(
    tmp_path: Path, s3_bucket: str, s3_proxy: S3Proxy, setup: tuple[Path, Path]
) -> None:
    ladder, source = setup
    assert _package(s3_bucket, tmp_path, ladder, source) == 0
    old = _presentation(s3_proxy, s3_bucket)
    old_keys = {f"lib/song/{n}" for n in referenced_names(old)}
    before = _etags(s3_proxy, s3_bucket)
    assert old_keys <= before.keys()

    assert _package(s3_bucket, tmp_path, ladder, source) == 0
    assert (_track(tmp_path)["status"], _track(tmp_path)["reason"]) == (
        "skipped",
        "up to date: fingerprint matches",
    )
    assert _etags(s3_proxy, s3_bucket) == before

    s3_proxy.log.clear()
    assert _package(s3_bucket, tmp_path, ladder, source, "--segment-duration", "0.5") == 0
    assert _track(tmp_path)["reason"] == "repackaged: segment_duration changed"
    new = _presentation(s3_proxy, s3_bucket)
    new_keys = {f"lib/song/{n}" for n in referenced_names(new)}
    assert new_keys.isdisjoint(old_keys)
    after = _etags(s3_proxy, s3_bucket)
    # Every object of the old set is still there, unchanged.
    assert {k: after[k] for k in old_keys} == {k: before[k] for k in old_keys}
    # Only the three fixed names were overwritten, and each after every new object
    # (media, init segments, media playlists) was in place.
    puts = [e for e in s3_proxy.log if e.method == "PUT" and e.status == 200]
    overwritten = {e.key for e in puts if e.key in before}
    assert overwritten == FIXED
    last_new = max(e.answered for e in puts if e.key in new_keys)
    assert all(e.arrived > last_new for e in puts if e.key in FIXED)
    assert not [e for e in s3_proxy.log if e.method == "POST" and "delete" in e.query]

    # gc: within the grace period nothing goes; after it, exactly the old set.
    assert main(["gc", f"s3://{s3_bucket}/lib", "--grace", "3600"]) == 0
    assert set(list_keys(s3_proxy.upstream, s3_bucket, "lib/song/")) == set(after)
    assert main(["gc", f"s3://{s3_bucket}/lib", "--grace", "0", "--dry-run"]) == 0
    assert set(list_keys(s3_proxy.upstream, s3_bucket, "lib/song/")) == set(after)
    assert main(["gc", f"s3://{s3_bucket}/lib", "--grace", "0"]) == 0
    left = set(list_keys(s3_proxy.upstream, s3_bucket, "lib/song/"))
    assert left == new_keys | FIXED


def test_a_republish_whose_upload_fails_leaves_the_published_track_as_it_was(
    make_input: MakeInput,
    tmp_path: Path,
    s3_bucket: str,
    s3_proxy: S3Proxy,
    setup: tuple[Path, Path],
) -> None:
    ladder, source = setup
    assert _package(s3_bucket, tmp_path, ladder, source) == 0
    before = _etags(s3_proxy, s3_bucket)
    shutil.copyfile(make_input("flac", 44100, 2, 1.5), source)  # the source changes
    target = f"/{s3_bucket}/lib/song/{PRESENTATION_NAME}"
    s3_proxy.fault = lambda method, path, query: 403 if (method, path) == ("PUT", target) else None
    assert _package(s3_bucket, tmp_path, ladder, source) == 1
    assert _track(tmp_path)["status"] == "failed"
    after = _etags(s3_proxy, s3_bucket)
    assert after[f"lib/song/{PRESENTATION_NAME}"] == before[f"lib/song/{PRESENTATION_NAME}"]
    assert {k: after[k] for k in before if k not in FIXED} == {
        k: v for k, v in before.items() if k not in FIXED
    }
    # The next run, S3 willing, completes the republish under yet another tag.
    s3_proxy.fault = lambda method, path, query: None
    assert _package(s3_bucket, tmp_path, ladder, source) == 0
    assert _track(tmp_path)["reason"] == "repackaged: source changed"
    tags = {r.name_tag for r in _presentation(s3_proxy, s3_bucket).renditions}
    assert tags != {""} and not any(t in k for t in tags for k in after)
