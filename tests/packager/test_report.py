"""``batch-report.json`` keeps every run: one entry per run id, merged atomically."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.packager.report import FORMAT, RunReport, read_runs
from cadenza.packager.track import TrackResult
from cadenza.version import version
from tests.conftest import MakeInput, Moto
from tests.packager.conftest import s3_client

STARTED = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


def _result(track_id: str, status: str = "packaged") -> TrackResult:
    return TrackResult(f"{track_id}.flac", track_id, status)


def test_each_run_is_kept_and_the_latest_is_on_top(make_input: MakeInput, tmp_path: Path) -> None:
    source = make_input("flac", 44100, 2, 1.0, name="kept")
    out = tmp_path / "out"
    for extra in ([], [], ["--force"]):
        assert (
            main(["package", str(source), "--out", str(out), "--ladder", "lossless", "-q", *extra])
            == 0
        )
    report = json.loads((out / "batch-report.json").read_text())
    assert report["format"] == FORMAT
    # The top level is the latest run, as a single-run report was: old readers work.
    assert report["summary"] == {"packaged": 1, "skipped": 0, "failed": 0}
    assert report["complete"] is True and report["cadenza_version"] == version()
    previous = report["previous_runs"]
    assert [r["summary"] for r in previous] == [
        {"packaged": 1, "skipped": 0, "failed": 0},
        {"packaged": 0, "skipped": 1, "failed": 0},
    ]
    runs = read_runs(out / "batch-report.json")
    assert len({r["run_id"] for r in runs}) == 3
    assert runs[-1]["run_id"] == report["run_id"] and runs[:2] == previous


def test_a_single_run_report_is_converted_on_read(make_input: MakeInput, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = {
        "started": "2026-01-02T03:04:05+00:00",
        "finished": "2026-01-02T03:05:00+00:00",
        "complete": True,
        "summary": {"packaged": 1, "skipped": 0, "failed": 0},
        "tracks": [{"input": "a.flac", "track_id": "a", "status": "packaged"}],
    }
    (out / "batch-report.json").write_text(json.dumps(old), encoding="utf-8")
    assert read_runs(out / "batch-report.json") == [
        {"run_id": "2026-01-02T03:04:05+00:00-single", **old}
    ]
    source = make_input("flac", 44100, 2, 1.0, name="after")
    assert main(["package", str(source), "--out", str(out), "--ladder", "lossless", "-q"]) == 0
    report = json.loads((out / "batch-report.json").read_text())
    assert report["previous_runs"] == [{"run_id": "2026-01-02T03:04:05+00:00-single", **old}]
    assert [t["track_id"] for t in report["tracks"]] == ["after"]


def test_runs_writing_the_same_report_keep_each_other(tmp_path: Path) -> None:
    """Two batches into one folder, their rewrites interleaved: neither run is lost, and
    a run rewritten later keeps the place its first write gave it."""
    path = tmp_path / "batch-report.json"
    first = RunReport(path, STARTED)
    second = RunReport(path, STARTED + timedelta(minutes=1))
    first.write([], done=False)
    second.write([_result("b")], done=False)
    first.write([_result("a"), _result("c", "failed")], done=True)
    runs = read_runs(path)
    assert [r["run_id"] for r in runs] == [first.run_id, second.run_id]
    assert runs[0]["summary"] == {"packaged": 1, "skipped": 0, "failed": 1}
    assert runs[0]["complete"] is True and runs[1]["complete"] is False
    top = json.loads(path.read_text())
    assert top["run_id"] == second.run_id  # the latest started is on top
    assert [p.name for p in tmp_path.iterdir()] == ["batch-report.json"]  # no lock file


def test_a_report_that_is_not_json_is_set_aside_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "batch-report.json"
    path.write_bytes(b"{ truncated")
    RunReport(path, STARTED).write([_result("a")], done=True)
    (aside,) = tmp_path.glob("batch-report.json.unreadable-*")
    assert aside.read_bytes() == b"{ truncated"
    assert len(read_runs(path)) == 1


def test_s3_output_keeps_the_history_across_fresh_staging_folders(
    make_input: MakeInput,
    tmp_path: Path,
    moto_server: Moto,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each run stages in a new folder (a new pod): the report uploaded to
    PREFIX/.cadenza/ is adopted first, so the upload keeps every earlier run."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    source = make_input("flac", 44100, 2, 1.0, name="up")
    out = f"s3://{s3_bucket}/lib"
    for run in range(3):
        staging = tmp_path / f"staging-{run}"
        argv = ["package", str(source), "--out", out, "--staging", str(staging)]
        assert main([*argv, "--ladder", "lossless", "-q"]) == 0
    body = s3_client(moto_server.url).get_object(
        Bucket=s3_bucket, Key="lib/.cadenza/batch-report.json"
    )["Body"]
    report = json.loads(body.read())
    assert len(report["previous_runs"]) == 2
    assert report["previous_runs"][0]["summary"]["packaged"] == 1
    assert report == json.loads((tmp_path / "staging-2" / "batch-report.json").read_text())
