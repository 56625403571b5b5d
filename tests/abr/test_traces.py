"""Throughput traces: the text format (pure parsing), scaling and synthesis."""

from __future__ import annotations

import pytest

from cadenza.abr.errors import TraceError
from cadenza.abr.traces import (
    DEFAULT_RTT_S,
    Trace,
    format_trace,
    parse_scenario_rtt_s,
    parse_trace,
    scale_trace,
    synthesize_trace,
)


def test_parse_trace_reads_mbps_and_skips_blank_lines() -> None:
    """Throughput is read in Mb/s, times are shifted to start at zero, blank lines ignored."""
    trace = parse_trace("10.0 2.5\n\n  11.5\t0.5  \n\n", "walk")
    assert trace == Trace("walk", (0.0, 1.5), (2.5e6, 0.5e6), DEFAULT_RTT_S)


def test_parse_trace_takes_the_rtt_it_is_given() -> None:
    assert parse_trace("0 1\n", "t", rtt_s=0.2).rtt_s == 0.2


@pytest.mark.parametrize(
    ("text", "line_no", "fragment"),
    [
        ("0 1\n1\n", 2, "expected"),
        ("0 1\n1 2 3\n", 2, "expected"),
        ("0 fast\n", 1, "not a number"),
        ("0 1\n\n2 1\n2 1\n", 4, "does not increase"),
        ("0 1\n1 0.5\n0.5 1\n", 3, "does not increase"),
        ("0 1\n1 -0.1\n", 2, "negative"),
        ("0 nan\n", 1, "finite"),
        ("", 0, "no samples"),
        ("\n  \n", 0, "no samples"),
        ("0 0\n1 0\n", 0, "zero throughout"),
    ],
)
def test_parse_trace_rejects_bad_text(text: str, line_no: int, fragment: str) -> None:
    """Malformed lines, non-increasing time, negative throughput and empty texts are errors
    that name the source and the line."""
    with pytest.raises(TraceError) as caught:
        parse_trace(text, "bad", source="traces/bad.txt")
    assert caught.value.line_no == line_no
    assert caught.value.source == "traces/bad.txt"
    assert fragment in caught.value.reason
    assert str(caught.value).startswith(f"traces/bad.txt:{line_no}: ")


def test_parse_trace_names_the_trace_when_no_source_is_given() -> None:
    with pytest.raises(TraceError) as caught:
        parse_trace("0 1\nx y\n", "walk")
    assert str(caught.value).startswith("walk:2: ")


def test_format_trace_round_trips() -> None:
    trace = Trace("t", (0.0, 1.0, 2.5), (1e6, 0.25e6, 3e6), 0.05)
    assert parse_trace(format_trace(trace), "t", rtt_s=0.05) == trace


def test_scenario_text_gives_the_rtt_in_milliseconds() -> None:
    assert parse_scenario_rtt_s("rtt_ms = 200\n", "scenario.toml") == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("rtt_ms 200\n", "not TOML"), ("rtt_ms = -1\n", "non-negative"), ("x = 1\n", "rtt_ms")],
)
def test_a_broken_scenario_text_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(TraceError, match=fragment) as caught:
        parse_scenario_rtt_s(text, "sat/scenario.toml")
    assert caught.value.source == "sat/scenario.toml"


def test_scale_trace_multiplies_throughput_only() -> None:
    """Scaling keeps times and RTT and multiplies every throughput."""
    trace = Trace("t", (0.0, 1.0), (1e6, 2e6), 0.05)
    scaled = scale_trace(trace, 0.2)
    assert scaled.times_s == trace.times_s
    assert scaled.rtt_s == trace.rtt_s
    assert scaled.throughput_bps == pytest.approx((2e5, 4e5))


def test_synthesize_trace_is_seeded() -> None:
    """The same seed gives the same trace; another seed another."""
    first = synthesize_trace("a", 200.0, 50.0, 0.01, 120.0, seed=3)
    assert first == synthesize_trace("a", 200.0, 50.0, 0.01, 120.0, seed=3)
    assert first != synthesize_trace("a", 200.0, 50.0, 0.01, 120.0, seed=4)


def test_synthesize_trace_mean_is_capacity_less_loss() -> None:
    """Mean goodput is the mean capacity times (1 − loss) when the Mathis bound is slack."""
    trace = synthesize_trace("w", 1000.0, 20.0, 0.001, 600.0, seed=1)
    assert trace.rtt_s == pytest.approx(0.02)
    assert len(trace.times_s) == 600
    assert trace.mean_bps() == pytest.approx(1000e3 * 0.999, rel=0.01)
