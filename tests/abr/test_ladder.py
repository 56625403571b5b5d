"""Ladder tuning: ``recommend_ladder``, ``cadenza ladder recommend`` and ``cadenza abr
simulate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.abr.ladder import recommend_ladder, render_ladder_toml, traces_from_estimates
from cadenza.abr.traces import format_trace
from cadenza.cli import main
from cadenza.manifests.ladder import MAX_RUNGS
from cadenza.manifests.model import Codec
from cadenza.packager.ladder import load_ladder

TRACES = Path(__file__).resolve().parents[2] / "samples" / "traces"
SLOW_BPS = [60e3, 90e3, 100e3, 120e3, 150e3, 180e3]
FAST_BPS = [1.5e6, 2e6, 3e6, 4e6, 5e6, 8e6]


def test_slow_audience_gets_a_lower_bottom_rung_than_a_fast_one() -> None:
    slow = recommend_ladder(traces_from_estimates(SLOW_BPS), max_rungs=2)
    fast = recommend_ladder(traces_from_estimates(FAST_BPS), max_rungs=2)
    assert slow.bitrates_kbps[0] < fast.bitrates_kbps[0], (slow, fast)


def test_recommendation_is_no_worse_than_the_default_ladder_it_can_express() -> None:
    """The default AAC ladder has four rungs; a four-rung search includes it."""
    result = recommend_ladder(
        traces_from_estimates(SLOW_BPS[:3]), max_rungs=4, candidates_kbps=[64, 128, 256, 320]
    )
    assert result.qoe_perceptual >= result.baseline_qoe_perceptual - 1e-6


def test_flac_has_no_ladder_to_tune() -> None:
    with pytest.raises(ValueError, match="lossless"):
        recommend_ladder(traces_from_estimates(SLOW_BPS), codec=Codec.FLAC)


def test_ladder_file_is_one_the_packager_reads(tmp_path: Path) -> None:
    recommendation = recommend_ladder(traces_from_estimates(SLOW_BPS), max_rungs=2)
    path = tmp_path / "ladder.toml"
    path.write_text(render_ladder_toml(recommendation), encoding="utf-8")
    ladder = load_ladder(str(path))
    assert [r.bitrate_bps for r in ladder.rungs] == [k * 1000 for k in recommendation.bitrates_kbps]
    assert {r.codec for r in ladder.rungs} == {Codec.AAC}


def test_cli_recommend_from_traces_writes_the_ladder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec" / "ladder.toml"
    status = main(
        ["ladder", "recommend", "--traces", str(TRACES / "synthetic" / "satellite"),
         "--max-rungs", "2", "--out", str(out)]
    )  # fmt: skip
    assert status == 0
    assert load_ladder(str(out)).rungs
    assert "recommended aac ladder" in capsys.readouterr().err


def test_cli_recommend_from_beacons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beacons = tmp_path / "beacons.txt"
    lines = [f'sid="s{i}",mtp={int(bps / 1000)},d=4000' for i, bps in enumerate(SLOW_BPS)]
    lines.append(json.dumps({"sid": "j", "mtp": 70, "d": 4000}))
    beacons.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status = main(["ladder", "recommend", "--beacons", str(beacons), "--max-rungs", "2"])
    assert status == 0
    assert "[[rung]]" in capsys.readouterr().out


def test_cli_recommend_refuses_beacons_without_throughput(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beacons = tmp_path / "beacons.txt"
    beacons.write_text('sid="a",bl=300\n', encoding="utf-8")
    assert main(["ladder", "recommend", "--beacons", str(beacons)]) == 2
    assert "no session carried a throughput" in capsys.readouterr().err


def test_cli_simulate_prints_the_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["abr", "simulate", "--traces", str(TRACES / "synthetic" / "wifi"),
         "--content-duration", "60", "--json"]
    )  # fmt: skip
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["traces"] == 5
    policies = result["policies"]
    assert set(policies) == {
        "hlsjs", "hlsjs+cadenza", "dashjs-dynamic", "dashjs+cadenza",
        "bba", "robust-mpc", "offline-optimal",
    }  # fmt: skip
    best = policies["offline-optimal"]["qoe"]
    assert all(p["qoe"] <= best + 1e-9 for p in policies.values())
    assert set(policies["bba"]) == {
        "qoe",
        "qoe_perceptual",
        "bitrate_kbps",
        "rebuffer_ratio",
        "switches_per_min",
        "startup_s",
    }


def test_cli_simulate_names_the_broken_trace_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad").write_text("0 1.0\n1 fast\n", encoding="utf-8")
    assert main(["abr", "simulate", "--traces", str(tmp_path)]) == 2
    assert "bad:2" in capsys.readouterr().err


def test_cli_simulate_accepts_a_ladder_list(tmp_path: Path) -> None:
    (tmp_path / "flat").write_text(
        format_trace(traces_from_estimates([300e3])[0]), encoding="utf-8"
    )
    assert main(["abr", "simulate", "--traces", str(tmp_path), "--ladder", "32,96"]) == 0


def test_recommendation_baseline_is_the_default_ladder() -> None:
    """The baseline is the packager's default ladder: the ``music`` preset's rungs."""
    aac = recommend_ladder(traces_from_estimates(SLOW_BPS[:2]), max_rungs=1)
    opus = recommend_ladder(traces_from_estimates(SLOW_BPS[:2]), codec=Codec.OPUS, max_rungs=1)
    assert aac.baseline_kbps == (64, 128, 256, 320)
    assert opus.baseline_kbps == (64, 128)


@pytest.mark.parametrize("max_rungs", [0, MAX_RUNGS + 1])
def test_recommendation_refuses_rungs_outside_the_shared_bound(max_rungs: int) -> None:
    with pytest.raises(ValueError, match=f"1..{MAX_RUNGS}"):
        recommend_ladder(traces_from_estimates(SLOW_BPS), max_rungs=max_rungs)


def test_cli_recommend_refuses_rungs_outside_the_shared_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["ladder", "recommend", "--traces", str(TRACES / "synthetic" / "satellite")]
    assert main([*argv, "--max-rungs", str(MAX_RUNGS + 1)]) == 2
    assert f"--max-rungs must be 1..{MAX_RUNGS}" in capsys.readouterr().err


def test_cli_recommend_reports_a_ladder_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` under a file: exit 1 naming the path, and nothing half-written."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    argv = ["ladder", "recommend", "--traces", str(TRACES / "synthetic" / "satellite")]
    assert main([*argv, "--max-rungs", "1", "--out", str(blocker / "ladder.toml")]) == 1
    assert str(blocker) in capsys.readouterr().err
    assert blocker.read_text(encoding="utf-8") == "not a folder\n"
