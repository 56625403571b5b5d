"""What ``cadenza abr`` and ``cadenza ladder`` read: trace files and folders, the
``scenario.toml`` beside them, ``--ladder`` options and beacon logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.abr.errors import TraceError
from cadenza.abr.traces import DEFAULT_RTT_S, Trace
from cadenza.abr_io import (
    UsageError,
    read_beacon_estimates,
    read_ladder_option,
    read_trace,
    read_trace_folder,
    read_traces,
)
from cadenza.cli import main
from cadenza.manifests.model import Codec
from tests.abr.test_sim import trace_set

TRACE_DIR = Path(__file__).resolve().parents[2] / "samples" / "traces" / "synthetic" / "wifi"


def test_read_trace_is_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "walk"
    path.write_text("10.0 2.5\n11.5 0.5\n", encoding="utf-8")
    assert read_trace(path) == Trace("walk", (0.0, 1.5), (2.5e6, 0.5e6), DEFAULT_RTT_S)


def test_read_trace_names_the_file_and_line_of_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0 1\n1 fast\n", encoding="utf-8")
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert caught.value.source == str(path)
    assert caught.value.line_no == 2
    assert str(caught.value).startswith(f"{path}:2: not a number")


def test_read_trace_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"0 1\n\xff\xfe\n")
    with pytest.raises(TraceError, match="not UTF-8") as caught:
        read_trace(path)
    assert caught.value.source == str(path)


def test_read_trace_takes_rtt_from_scenario_toml(tmp_path: Path) -> None:
    """A ``scenario.toml`` beside a trace gives its RTT in milliseconds."""
    (tmp_path / "scenario.toml").write_text("rtt_ms = 200\n", encoding="utf-8")
    (tmp_path / "sat_1").write_text("0 0.1\n", encoding="utf-8")
    assert read_trace(tmp_path / "sat_1").rtt_s == pytest.approx(0.2)


def test_read_trace_rejects_a_broken_scenario_toml(tmp_path: Path) -> None:
    """A ``scenario.toml`` that is not TOML is reported against that file."""
    (tmp_path / "scenario.toml").write_text("rtt_ms 200\n", encoding="utf-8")
    (tmp_path / "sat_1").write_text("0 0.1\n", encoding="utf-8")
    with pytest.raises(TraceError) as caught:
        read_trace(tmp_path / "sat_1")
    assert caught.value.source == str(tmp_path / "scenario.toml")


def test_folders_are_read_recursively_sorted_and_without_non_traces(tmp_path: Path) -> None:
    """Traces are found in subfolders and sorted by name; licences, readmes, dotfiles,
    configuration and code are not traces; ``*.txt`` files are."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "zeta").write_text("0 1\n", encoding="utf-8")
    (tmp_path / "alpha").write_text("0 1\n", encoding="utf-8")
    (tmp_path / "mid.txt").write_text("0 1\n1 2\n", encoding="utf-8")
    for other in ("LICENSE-traces", "README.md", ".hidden", "make.py", "meta.json"):
        (tmp_path / other).write_text("not a trace\n", encoding="utf-8")
    (tmp_path / "scenario.toml").write_text("rtt_ms = 20\n", encoding="utf-8")
    traces = read_trace_folder(tmp_path)
    assert [trace.name for trace in traces] == ["alpha", "mid.txt", "zeta"]
    assert traces[0].rtt_s == pytest.approx(0.02)
    assert traces[2].rtt_s == DEFAULT_RTT_S  # no scenario.toml in b/


def test_bundled_trace_sets_load() -> None:
    """The sample sets hold 5 synthetic traces per scenario and 20 of each real set."""
    sizes = {name: len(trace_set(name)) for name in ("3g", "satellite", "norway-3g", "fcc")}
    assert sizes == {"3g": 5, "satellite": 5, "norway-3g": 20, "fcc": 20}
    assert trace_set("satellite")[0].rtt_s == pytest.approx(0.2)
    assert trace_set("fcc")[0].rtt_s == DEFAULT_RTT_S


def test_read_traces_takes_folders_and_single_files_and_scales(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("0 1\n", encoding="utf-8")
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "two").write_text("0 2\n", encoding="utf-8")
    traces = read_traces([tmp_path / "one.txt", tmp_path / "set"], scale=0.5)
    assert [t.throughput_bps for t in traces] == [(0.5e6,), (1e6,)]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [("missing", "no such file or folder"), ("empty", "no trace files in it")],
)
def test_read_traces_refuses_sources_without_traces(
    tmp_path: Path, make: str, fragment: str
) -> None:
    source = tmp_path / make
    if make == "empty":
        source.mkdir()
        (source / "README.md").write_text("nothing here\n", encoding="utf-8")
    with pytest.raises(UsageError, match=fragment):
        read_traces([source])


def test_cli_simulate_reads_txt_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Any text file of ``time throughput`` lines is a trace, ``*.txt`` included."""
    for i in range(2):
        (tmp_path / f"link{i}.txt").write_text("0 0.5\n1 1.0\n2 0.3\n", encoding="utf-8")
    assert main(["abr", "simulate", "--traces", str(tmp_path), "--content-duration", "20"]) == 0
    assert capsys.readouterr().out.startswith("2 traces\n")


def test_cli_simulate_names_the_file_and_line_of_a_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.txt").write_text("0 1.0\n", encoding="utf-8")
    (tmp_path / "trace.txt").write_text("0 1.0\n1 1.0\n2 fast\n", encoding="utf-8")
    assert main(["abr", "simulate", "--traces", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cadenza abr simulate: {tmp_path / 'trace.txt'}:3: not a number")


def test_ladder_option_takes_kbps_lists() -> None:
    assert read_ladder_option("128, 64,64") == (64_000, 128_000)
    with pytest.raises(UsageError, match="positive"):
        read_ladder_option("0,64")


def test_ladder_option_takes_presets_and_files_as_strictly_as_the_packager(
    tmp_path: Path,
) -> None:
    assert read_ladder_option("music") == (64_000, 128_000, 256_000, 320_000)
    assert read_ladder_option("music", Codec.OPUS) == (64_000, 128_000)
    path = tmp_path / "mine.toml"
    path.write_text('[[rung]]\ncodec = "aac"\nbitrate_kbps = 96\n', encoding="utf-8")
    assert read_ladder_option(str(path)) == (96_000,)
    path.write_text('[[rung]]\ncodec = "aac"\nbitrate_kbps = 96\nbitrate = 1\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"rung 1: unknown key\(s\) bitrate"):
        read_ladder_option(str(path))
    with pytest.raises(UsageError, match="has no aac rungs"):
        read_ladder_option("lossless")


def test_ladder_option_without_a_codec_takes_the_ladders_lossy_rungs(tmp_path: Path) -> None:
    """Any ladder with a lossy rung can be simulated: AAC first, else Opus."""
    path = tmp_path / "opus.toml"
    path.write_text(
        '[[rung]]\ncodec = "opus"\nbitrate_kbps = 48\n\n'
        '[[rung]]\ncodec = "opus"\nbitrate_kbps = 96\n',
        encoding="utf-8",
    )
    assert read_ladder_option(str(path), None) == (48_000, 96_000)
    assert read_ladder_option("music", None) == (64_000, 128_000, 256_000, 320_000)
    with pytest.raises(UsageError, match="has no aac or opus rungs"):
        read_ladder_option("lossless", None)
    status = main(["abr", "simulate", "--traces", str(TRACE_DIR), "--ladder", str(path),
                   "--content-duration", "20"])  # fmt: skip
    assert status == 0
    assert main(["abr", "simulate", "--traces", str(TRACE_DIR), "--ladder", str(path),
                 "--codec", "aac"]) == 2  # fmt: skip


def test_beacon_log_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "beacons.log"
    path.write_text('sid="a",mtp=100\n{"sid": \n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"beacons.log:2: not JSON"):
        read_beacon_estimates(path)


def test_a_one_rung_ladder_file_simulates(tmp_path: Path) -> None:
    """Every policy copes with a ladder of one rung (BBA divided its cushion by zero
    rungs and crashed)."""
    path = tmp_path / "one.toml"
    path.write_text('[[rung]]\ncodec = "aac"\nbitrate_kbps = 96\n', encoding="utf-8")
    status = main(["abr", "simulate", "--traces", str(TRACE_DIR), "--ladder", str(path),
                   "--content-duration", "20"])  # fmt: skip
    assert status == 0
