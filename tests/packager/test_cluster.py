"""``cadenza package --cluster``: a real Dask ``LocalCluster`` (a scheduler and two
worker processes, as in production) packages a catalogue into moto's S3 server on
loopback; one corrupt track fails alone; a rerun skips what is done."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.manifests.media_types import cache_control_for, content_type_for
from cadenza.manifests.model import PRESENTATION_NAME
from tests.conftest import MakeInput, Moto, free_port
from tests.packager.conftest import (
    list_keys,
    local_cluster,
    s3_client,
    scheduler_task_prefixes,
)

LADDER = """
name = "cluster-test"
[[rung]]
codec = "aac"
bitrate_kbps = 64
"""


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_cluster() as address:
        yield address


@pytest.mark.slow
def test_a_catalogue_on_a_dask_cluster_into_s3(
    scheduler: str,
    moto_server: Moto,
    s3_bucket: str,
    make_input: MakeInput,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3 = s3_client(moto_server.url)
    first = make_input("flac", 44100, 2, 2.0, name="first")
    second = make_input("wav", 48000, 1, 2.0, name="second")
    s3.put_object(Bucket=s3_bucket, Key="masters/second.wav", Body=second.read_bytes())
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 64)
    catalogue = tmp_path / "catalogue.txt"
    catalogue.write_text(
        f"# three masters, one of them damaged\n{first}\ns3://{s3_bucket}/masters/second.wav\n"
        f"{corrupt.name}\n",
        encoding="utf-8",
    )
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER, encoding="utf-8")
    staging = tmp_path / "staging"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    argv = [
        "package",
        "--catalogue",
        str(catalogue),
        "--out",
        f"s3://{s3_bucket}/lib",
        "--cluster",
        scheduler,
        "--ladder",
        str(ladder),
        "--segment-duration",
        "1",
        "--staging",
        str(staging),
    ]
    assert main(argv) == 1  # the corrupt track failed; the others did not
    assert any(p.startswith("cadenza-package") for p in scheduler_task_prefixes(scheduler))

    keys = list_keys(moto_server.url, s3_bucket, "lib/")
    for track in ("first", "second"):
        names = [k for k in keys if k.startswith(f"lib/{track}/")]
        assert f"lib/{track}/{PRESENTATION_NAME}" in names
        assert f"lib/{track}/aac-64k/init.mp4" in names
        for key in names:
            head = s3.head_object(Bucket=s3_bucket, Key=key)
            assert head["ContentType"] == content_type_for(key), key
            assert head["CacheControl"] == cache_control_for(key), key
    assert not [k for k in keys if k.startswith("lib/corrupt/")]
    report = json.loads(
        s3.get_object(Bucket=s3_bucket, Key="lib/.cadenza/batch-report.json")["Body"].read()
    )
    assert report["summary"] == {"packaged": 2, "skipped": 0, "failed": 1}
    (failed,) = [t for t in report["tracks"] if t["status"] == "failed"]
    assert failed["track_id"] == "corrupt"
    assert failed["error"].startswith(f"{tmp_path / 'corrupt.flac'}: ")

    # Again: the finished tracks are skipped, the damaged one fails again.
    before = {
        t: s3.head_object(Bucket=s3_bucket, Key=f"lib/{t}/{PRESENTATION_NAME}")["ETag"]
        for t in ("first", "second")
    }
    assert main(argv) == 1
    report = json.loads((staging / "batch-report.json").read_text())
    statuses = {t["track_id"]: t["status"] for t in report["tracks"]}
    assert statuses == {"first": "skipped", "second": "skipped", "corrupt": "failed"}
    for track, etag in before.items():
        head = s3.head_object(Bucket=s3_bucket, Key=f"lib/{track}/{PRESENTATION_NAME}")
        assert head["ETag"] == etag


def test_an_unreachable_scheduler_is_reported(
    make_input: MakeInput,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("cadenza.packager.cluster.CONNECT_TIMEOUT_S", 2.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    argv = ["package", str(make_input()), "--out", str(tmp_path / "out"), "--cluster", address]
    assert main(argv) == 1
    assert f"cluster {address}: cannot connect to the scheduler" in capsys.readouterr().err
