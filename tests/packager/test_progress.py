"""Progress within a track, on a terminal and off it, and the -q/-v levels."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from cadenza.manifests.ladder import PRESETS
from cadenza.packager.batch import run_batch
from cadenza.packager.decode import SourceProbe
from cadenza.packager.progress import (
    PLAIN_EVERY_S,
    REPORT_EVERY_S,
    DecodeProgress,
    DecodeTracker,
    Progress,
    reporting_to,
)
from cadenza.packager.track import PackageOptions, TrackResult, package_track
from tests.conftest import MakeInput


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _probe(rate_hz: int = 48000, declared_ticks: int | None = 48000 * 240) -> SourceProbe:
    return SourceProbe(
        path=Path("x.flac"),
        codec_name="flac",
        sample_rate_hz=rate_hz,
        channels=2,
        layout_name="stereo",
        channel_names=("FL", "FR"),
        bits_per_sample=16,
        declared_duration_ticks=declared_ticks,
    )


def test_eta_follows_the_rate_so_far() -> None:
    progress = DecodeProgress("t", decoded_s=60.0, duration_s=240.0, elapsed_s=10.0)
    assert progress.fraction == 0.25
    assert progress.eta_s == pytest.approx(30.0)  # 180 s of audio left at 6 s per second
    assert progress.describe() == "t 1:00/4:00 (25%) ETA 0:30"


def test_no_eta_without_a_length_or_before_the_rate_settles() -> None:
    assert DecodeProgress("t", 60.0, None, 10.0).eta_s is None
    assert DecodeProgress("t", 60.0, None, 10.0).describe() == "t 1:00"
    assert DecodeProgress("t", 6.0, 240.0, 0.5).eta_s is None
    assert DecodeProgress("t", 3 * 3600.0, 3 * 3600.0, 900.0).describe() == (
        "t 3:00:00/3:00:00 (100%) ETA 0:00"
    )


def test_tracker_sends_at_most_every_report_interval() -> None:
    clock = Clock()
    sent: list[DecodeProgress] = []
    tracker = DecodeTracker("t", _probe(), sent.append, clock)
    tracker.advance(48000)  # the first block is reported at once
    clock.now += REPORT_EVERY_S / 2
    tracker.advance(96000)  # too soon
    clock.now += REPORT_EVERY_S
    tracker.advance(144000)
    assert [(p.decoded_s, p.elapsed_s) for p in sent] == [
        (1.0, 0.0),
        (3.0, pytest.approx(1.5 * REPORT_EVERY_S)),
    ]
    assert {p.duration_s for p in sent} == {240.0}


def test_tracker_starts_only_where_a_sink_is_installed() -> None:
    assert DecodeTracker.start("t", _probe()) is None
    with reporting_to(lambda progress: None):
        assert DecodeTracker.start("t", _probe()) is not None
    assert DecodeTracker.start("t", _probe()) is None


def test_plain_lines_per_track_at_most_every_interval() -> None:
    clock = Clock()
    stream = io.StringIO()
    progress = Progress(2, stream, clock=clock)
    progress.decoding(DecodeProgress("a", 10.0, 240.0, 5.0))
    progress.decoding(DecodeProgress("b", 1.0, 60.0, 0.5))
    clock.now += PLAIN_EVERY_S / 2
    progress.decoding(DecodeProgress("a", 20.0, 240.0, 10.0))  # too soon for a
    clock.now += PLAIN_EVERY_S / 2
    progress.decoding(DecodeProgress("a", 40.0, 240.0, 15.0))
    progress.update(TrackResult("a.flac", "a", "packaged", output="out/a", wall_s=30.0))
    assert stream.getvalue().splitlines() == [
        "    a 0:10/4:00 (4%) ETA 1:55",
        "    b 0:01/1:00 (2%)",
        "    a 0:40/4:00 (17%) ETA 1:15",
        "[1/2] packaged a.flac -> out/a (30.0 s)",
    ]
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()


def test_terminal_status_line_shows_every_track_in_flight() -> None:
    stream = Terminal()
    progress = Progress(2, stream, clock=Clock(), width=120)
    progress.decoding(DecodeProgress("a", 60.0, 240.0, 10.0))
    progress.decoding(DecodeProgress("b", 30.0, 60.0, 10.0))
    status = stream.getvalue().rsplit("\r\033[K", 1)[-1]
    assert (
        status
        == "[....................] 0/2 | a 1:00/4:00 (25%) ETA 0:30 | b 0:30/1:00 (50%) ETA 0:10"
    )
    progress.update(TrackResult("a.flac", "a", "packaged", output="out/a", wall_s=40.0))
    text = stream.getvalue()
    # The finished track scrolls above; the status line is drawn again without it.
    assert "\r\033[K[1/2] packaged a.flac -> out/a (40.0 s)\n" in text
    assert (
        text.rsplit("\r\033[K", 1)[-1] == "[##########..........] 1/2 | b 0:30/1:00 (50%) ETA 0:10"
    )
    progress.update(TrackResult("b.flac", "b", "skipped", output="out/b"))
    assert stream.getvalue().endswith("[####################] 2/2\n")


def test_terminal_status_line_is_cut_to_the_terminal_width() -> None:
    stream = Terminal()
    progress = Progress(1, stream, width=40)
    progress.decoding(DecodeProgress("a-track-with-a-long-name", 60.0, 240.0, 10.0))
    status = stream.getvalue().rsplit("\r\033[K", 1)[-1]
    assert status == "[....................] 0/1 | a-track-w…"
    assert len(status) == 39  # the last column stays free: no wrap onto a new line


def test_quiet_shows_only_failures_and_warnings() -> None:
    stream = io.StringIO()
    progress = Progress(3, stream, level=logging.WARNING)
    progress.decoding(DecodeProgress("a", 60.0, 240.0, 10.0))
    progress.update(TrackResult("a.flac", "a", "packaged", output="out/a"))
    progress.update(TrackResult("b.flac", "b", "failed", error="b.flac: file is empty"))
    progress.update(TrackResult("c.flac", "c", "packaged", warnings=["rung skipped: x"]))
    assert stream.getvalue().splitlines() == [
        "[2/3] failed b.flac FAILED: b.flac: file is empty",
        "[3/3] packaged c.flac -> None (0.0 s)",
        "    warning: rung skipped: x",
    ]


def test_verbose_adds_audio_length_and_cpu_time() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream, level=logging.DEBUG)
    result = TrackResult("a.flac", "a", "packaged", output="out/a", wall_s=2.0, cpu_s=3.5)
    result.duration_s = 180.0
    progress.update(result)
    assert stream.getvalue().splitlines()[1] == "    audio 180.0 s, CPU 3.5 s"


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_within_each_track_reaches_the_batch(
    make_input: MakeInput, tmp_path: Path, jobs: int
) -> None:
    """From the worker processes over their pipes (jobs=2, a time limit), or from this
    process (jobs=1, none): each track reports its decoding, with the declared length."""
    inputs = [make_input("flac", 44100, 2, 2.0, name=n) for n in ("p-one", "p-two")]
    stream = io.StringIO()
    summary = run_batch(
        inputs,
        tmp_path,
        PackageOptions(ladder=PRESETS["lossless"]),
        jobs=jobs,
        timeout_s=600.0 if jobs > 1 else None,
        stream=stream,
        package=package_track,
    )
    assert summary.exit_status == 0
    lines = stream.getvalue().splitlines()
    for name in ("p-one", "p-two"):
        decoding = [line for line in lines if line.startswith(f"    {name} 0:0")]
        assert decoding, lines
        assert all("/0:02 (" in line for line in decoding)
        (finished,) = [i for i, line in enumerate(lines) if f"{name}.flac -> " in line]
        assert lines.index(decoding[0]) < finished


def test_quiet_flag_silences_progress(
    make_input: MakeInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cadenza.cli import main

    source = make_input("flac", 44100, 2, 1.0, name="hushed")
    assert main(["package", str(source), "--out", str(tmp_path), "--ladder", "lossless", "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("cadenza package: 1 packaged, 0 skipped, 0 failed")
    with pytest.raises(SystemExit):
        main(["package", str(source), "--out", str(tmp_path), "-q", "-v"])
