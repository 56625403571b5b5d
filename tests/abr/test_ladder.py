"""Ladder tuning: ``recommend_ladder``, ``cadenza ladder recommend`` and ``cadenza abr
simulate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.abr.ladder import (
    MAX_TRACES,
    Outcome,
    by_mean_throughput,
    recommend_ladder,
    render_ladder_toml,
    split_holdout,
    stratified_positions,
    stratified_sample,
    traces_from_estimates,
)
from cadenza.abr.traces import Trace, format_trace
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
        "hlsjs", "hlsjs+cadenza", "dashjs-dynamic", "dashjs+cadenza", "shaka",
        "bba", "robust-mpc", "origin", "origin-served", "offline-optimal",
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


def flat(name: str, rate_bps: float) -> Trace:
    return Trace(name, (0.0, 1.0), (rate_bps, rate_bps))


def test_stratified_sample_keeps_the_slowest_stratum_whole() -> None:
    """100 traces named against their speed (so sampling by name would scatter the
    slow ones): the slowest tenth (a quarter of the budget of 40) all stay, the
    sample fills the limit and spans the range."""
    traces = [flat(f"t{99 - i:03d}", 20e3 * (i + 1)) for i in range(100)]
    sample = stratified_sample(traces, 40)
    slowest = by_mean_throughput(traces)[:10]
    assert all(trace in sample for trace in slowest)
    assert len(sample) == len(set(sample)) == 40
    assert max(t.mean_bps() for t in sample) == max(t.mean_bps() for t in traces)
    assert sample == stratified_sample(list(reversed(traces)), 40)
    assert stratified_sample(traces[:30], 40) == traces[:30]


def test_estimates_keep_the_slowest_sessions() -> None:
    """500 sessions at 10, 20, ... 5000 kb/s: the slowest quarter of the budget are
    all kept (an even spread would keep one session in ten)."""
    positions = stratified_positions(500, MAX_TRACES)
    assert positions[: MAX_TRACES // 4] == list(range(MAX_TRACES // 4))
    assert len(positions) == MAX_TRACES
    assert positions[-1] == 499
    traces = traces_from_estimates([10e3 * (i + 1) for i in range(500)])
    means = sorted(trace.mean_bps() for trace in traces)
    # The 12th slowest session runs at 120 kb/s; an even spread's at about 1.2 Mb/s.
    assert means[MAX_TRACES // 4 - 1] < 300e3


def test_recommend_uses_every_trace_up_to_the_limit() -> None:
    traces = traces_from_estimates([60e3 + 20e3 * i for i in range(30)])
    assert len(traces) <= MAX_TRACES
    assert recommend_ladder(traces, max_rungs=1, candidates_kbps=[64, 128]).traces == len(traces)


def test_never_recommends_a_ladder_worse_than_the_current_one() -> None:
    """Only a 320 kb/s rung to choose from, for listeners at 100 kb/s: the search's
    best loses to the current 64/128 ladder, which is kept."""
    traces = traces_from_estimates([90e3, 100e3, 110e3])
    result = recommend_ladder(traces, max_rungs=1, candidates_kbps=[320], current_kbps=[64, 128])
    assert result.outcome is Outcome.KEPT_CURRENT
    assert result.bitrates_kbps == (64, 128)
    assert result.best_found_kbps == (320,)
    assert result.qoe_perceptual == result.baseline_qoe_perceptual
    assert "kept-current" in render_ladder_toml(result)


@pytest.mark.parametrize("rates", [SLOW_BPS, FAST_BPS, SLOW_BPS[:2] + FAST_BPS[-2:]])
def test_recommendation_never_scores_below_the_baseline(rates: list[float]) -> None:
    result = recommend_ladder(traces_from_estimates(rates), max_rungs=2)
    assert result.qoe_perceptual >= result.baseline_qoe_perceptual


def test_holdout_split_is_deterministic_stratified_and_disjoint() -> None:
    traces = [flat(f"t{i:02d}", 50e3 * (i + 1)) for i in range(20)]
    fit, held = split_holdout(traces, 0.25)
    assert len(held) == 5
    assert sorted(t.name for t in fit + held) == sorted(t.name for t in traces)
    ranks = [by_mean_throughput(traces).index(t) for t in held]
    assert max(ranks) - min(ranks) >= 15  # spread over the range, not one end
    assert (fit, held) == split_holdout(list(reversed(traces)), 0.25)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_holdout(traces, 1.0)


def test_holdout_reports_both_ladders_on_the_held_out_traces() -> None:
    traces = traces_from_estimates(SLOW_BPS + FAST_BPS)
    result = recommend_ladder(traces, max_rungs=2, holdout=0.25)
    assert result.holdout is not None
    assert result.holdout.traces == 3
    assert result.traces == len(traces) - 3
    assert result.to_dict()["holdout"] == result.holdout.to_dict()


def test_cli_recommend_with_holdout(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ladder", "recommend", "--traces", str(TRACES / "synthetic" / "satellite")]
    assert main([*argv, "--max-rungs", "1", "--holdout", "0.4"]) == 0
    captured = capsys.readouterr()
    assert "held out (2 traces)" in captured.err
    assert "# held out:" in captured.out
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--holdout", "1.5"])
    assert exited.value.code == 2


def test_cli_simulate_evaluates_a_ladder_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ladder file ``cadenza ladder recommend`` writes is one ``--ladder`` reads."""
    out = tmp_path / "ladder.toml"
    recommendation = recommend_ladder(traces_from_estimates(FAST_BPS), max_rungs=2)
    assert len(recommendation.bitrates_kbps) == 2
    out.write_text(render_ladder_toml(recommendation), encoding="utf-8")
    sat = str(TRACES / "synthetic" / "satellite")
    argv = ["abr", "simulate", "--traces", sat, "--ladder", str(out), "--content-duration", "40"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["traces"] == 5
    top_kbps = recommendation.bitrates_kbps[-1]
    assert max(p["bitrate_kbps"] for p in result["policies"].values()) <= top_kbps
