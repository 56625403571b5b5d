"""The ``cadenza package`` command as operators run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cadenza.cli import main
from tests.conftest import MakeInput


def _run(*args: str | Path) -> int:
    return main(["package", *(str(a) for a in args)])


def test_batch_packages_every_track_and_writes_a_report(
    make_input: MakeInput, tmp_path: Path
) -> None:
    inputs = [
        make_input("flac", 44100, 2, 1.0, name="one"),
        make_input("wav", 48000, 1, 1.0, name="two"),
    ]
    out = tmp_path / "out"
    assert _run(*inputs, "--out", out, "--ladder", "lossy", "--jobs", "2") == 0
    report = json.loads((out / "batch-report.json").read_text())
    assert report["summary"] == {"packaged": 2, "skipped": 0, "failed": 0}
    assert {t["track_id"] for t in report["tracks"]} == {"one", "two"}
    assert all((out / name / "master.m3u8").is_file() for name in ("one", "two"))


def test_one_bad_track_fails_the_batch_but_not_the_others(
    make_input: MakeInput, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"")
    good = make_input("flac", 44100, 2, 1.0, name="good")
    out = tmp_path / "out"
    assert _run(bad, good, "--out", out, "--ladder", "lossy", "--jobs", "1") == 1
    report = json.loads((out / "batch-report.json").read_text())
    status = {t["track_id"]: (t["status"], t["error"]) for t in report["tracks"]}
    assert status["good"] == ("packaged", None)
    assert status["bad"][0] == "failed" and "bad.mp3: file is empty" in status["bad"][1]


def test_rerun_skips_complete_tracks(make_input: MakeInput, tmp_path: Path) -> None:
    source = make_input("flac", 44100, 2, 1.0, name="again")
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", "lossless") == 0
    before = (out / "again" / "presentation.json").stat().st_mtime_ns
    assert _run(source, "--out", out, "--ladder", "lossless") == 0
    report = json.loads((out / "batch-report.json").read_text())
    assert report["summary"]["skipped"] == 1
    assert (out / "again" / "presentation.json").stat().st_mtime_ns == before


def test_force_repackages(make_input: MakeInput, tmp_path: Path) -> None:
    source = make_input("flac", 44100, 2, 1.0, name="forced")
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", "lossless") == 0
    assert _run(source, "--out", out, "--ladder", "lossless", "--force") == 0
    report = json.loads((out / "batch-report.json").read_text())
    assert report["summary"]["packaged"] == 1


def test_track_id_is_the_stem_reduced_to_safe_characters(
    make_input: MakeInput, tmp_path: Path
) -> None:
    source = make_input("flac", 44100, 2, 1.0, name="My Song (live)! #2")
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", "lossless") == 0
    assert (out / "MySonglive2" / "manifest.mpd").is_file()


def test_duplicate_track_ids_are_reported(make_input: MakeInput, tmp_path: Path) -> None:
    first = make_input("flac", 44100, 2, 1.0, name="dup")
    second = make_input("wav", 44100, 2, 1.0, name="dup")
    out = tmp_path / "out"
    assert _run(first, second, "--out", out, "--ladder", "lossless") == 1
    report = json.loads((out / "batch-report.json").read_text())
    assert any("already used" in (t["error"] or "") for t in report["tracks"])


def test_unknown_ladder_codec_is_a_usage_error(
    make_input: MakeInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder = tmp_path / "l.toml"
    ladder.write_text('[[rung]]\ncodec = "vorbis"\nbitrate_kbps = 96\n', encoding="utf-8")
    assert _run(make_input(), "--out", tmp_path / "out", "--ladder", ladder) == 2
    assert "unknown codec 'vorbis'" in capsys.readouterr().err


def test_out_below_a_file_is_a_usage_error(
    make_input: MakeInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    assert _run(make_input(), "--out", blocker / "out") == 2
    assert str(blocker / "out") in capsys.readouterr().err


def test_bad_segment_duration_is_a_usage_error(make_input: MakeInput, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(make_input(), "--out", tmp_path, "--segment-duration", "0")
    assert exit_info.value.code == 2


def test_installed_console_script_runs(tmp_path: Path, make_input: MakeInput) -> None:
    """The ``cadenza`` entry point works as a separate process."""
    cadenza = Path(sys.executable).with_name("cadenza")
    done = subprocess.run(
        [
            str(cadenza),
            "package",
            str(make_input()),
            "--out",
            str(tmp_path),
            "--ladder",
            "lossless",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 packaged" in done.stderr
