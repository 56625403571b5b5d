"""Network throughput traces for the ABR simulator: parsing, scaling, synthesis.

A trace is a piecewise-constant throughput: sample ``i`` holds from ``times_s[i]``
until ``times_s[i + 1]``; the last sample holds for as long as the step before it
(one second when there is only one sample).  Times are shifted so the first
sample starts at zero.  A simulator that runs past the end loops the trace.

The text format is the one the Pensieve / "real-world bandwidth traces"
collections use: one ``time_s throughput_Mbps`` pair per line, whitespace
separated (:func:`parse_trace`).  The round-trip time of a trace is not in that
format; a scenario's TOML may give it (``rtt_ms = 50``,
:func:`parse_scenario_rtt_s`), otherwise :data:`DEFAULT_RTT_S` applies.  Which
files hold traces, and reading them, is the command line's business.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from cadenza.abr.errors import TraceError

# Real traces carry no RTT; this is a typical mobile/broadband one.
DEFAULT_RTT_S: Final = 0.08

# Synthetic model constants (see synthesize_trace).
_SYNTH_STEP_S: Final = 1.0
_AR_COEFFICIENT: Final = 0.9
_LOG_SIGMA: Final = 0.35
_DIP_ENTER_PROBABILITY: Final = 0.02
_DIP_STAY_PROBABILITY: Final = 0.8
_DIP_FACTOR_RANGE: Final = (0.1, 0.35)
_MSS_BYTES: Final = 1460
_MATHIS_C: Final = math.sqrt(1.5)
_FLOOR_FRACTION: Final = 0.02


@dataclass(frozen=True, slots=True)
class Trace:
    """Throughput over time; hashable, so a trace can key caches."""

    name: str
    times_s: tuple[float, ...]
    throughput_bps: tuple[float, ...]
    rtt_s: float = DEFAULT_RTT_S

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.throughput_bps):
            raise ValueError("a trace needs as many times as throughputs, at least one")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ValueError("trace times must increase")
        if any(not math.isfinite(r) or r < 0 for r in self.throughput_bps):
            raise ValueError("trace throughput must be finite and not negative")
        if not any(r > 0 for r in self.throughput_bps):
            raise ValueError("a trace must carry some throughput")
        if not math.isfinite(self.rtt_s) or self.rtt_s < 0:
            raise ValueError("rtt_s must be finite and not negative")

    @property
    def last_step_s(self) -> float:
        """How long the last sample holds."""
        if len(self.times_s) < 2:
            return 1.0
        return self.times_s[-1] - self.times_s[-2]

    @property
    def period_s(self) -> float:
        """The length of one pass through the trace."""
        return self.times_s[-1] - self.times_s[0] + self.last_step_s

    def mean_bps(self, window_s: float | None = None) -> float:
        """Time-weighted mean throughput over the first ``window_s`` (the whole trace if None)."""
        starts = np.asarray(self.times_s) - self.times_s[0]
        ends = np.append(starts[1:], self.period_s)
        limit = self.period_s if window_s is None else min(window_s, self.period_s)
        if limit <= 0:
            raise ValueError("window_s must be positive")
        lengths = np.clip(np.minimum(ends, limit) - starts, 0.0, None)
        return float(np.dot(lengths, np.asarray(self.throughput_bps)) / limit)


def parse_trace(
    text: str, name: str, *, rtt_s: float = DEFAULT_RTT_S, source: str | None = None
) -> Trace:
    """Parse the text of one ``time_s throughput_Mbps`` trace called ``name``.

    Raises :class:`TraceError` naming ``source`` (``name`` if None) and the line
    on a malformed line, a time that does not increase, a negative or non-finite
    value, or a text without samples (or with no throughput at all).
    """
    where = name if source is None else source
    times: list[float] = []
    rates: list[float] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise TraceError(where, line_no, f"expected 'time_s throughput_Mbps', got {line!r}")
        try:
            time_s, mbps = float(fields[0]), float(fields[1])
        except ValueError:
            raise TraceError(where, line_no, f"not a number in {line!r}") from None
        if not (math.isfinite(time_s) and math.isfinite(mbps)):
            raise TraceError(where, line_no, "values must be finite")
        if mbps < 0:
            raise TraceError(where, line_no, f"negative throughput {mbps}")
        if times and time_s <= times[-1]:
            raise TraceError(where, line_no, f"time {time_s} does not increase on {times[-1]}")
        times.append(time_s)
        rates.append(mbps * 1e6)
    if not times:
        raise TraceError(where, 0, "no samples")
    if not any(rate > 0 for rate in rates):
        raise TraceError(where, 0, "throughput is zero throughout")
    start = times[0]
    return Trace(
        name=name,
        times_s=tuple(t - start for t in times),
        throughput_bps=tuple(rates),
        rtt_s=rtt_s,
    )


def parse_scenario_rtt_s(text: str, source: str) -> float:
    """The ``rtt_ms`` a scenario's TOML text must give, in seconds."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TraceError(source, 0, f"not TOML: {error}") from None
    rtt_ms = data.get("rtt_ms")
    if not isinstance(rtt_ms, int | float) or isinstance(rtt_ms, bool) or rtt_ms < 0:
        raise TraceError(source, 0, "rtt_ms must be a non-negative number")
    return float(rtt_ms) / 1000.0


def scale_trace(trace: Trace, factor: float) -> Trace:
    """The same trace with every throughput multiplied by ``factor`` (> 0)."""
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError("factor must be positive")
    return replace(
        trace,
        name=f"{trace.name}x{factor:g}",
        throughput_bps=tuple(rate * factor for rate in trace.throughput_bps),
    )


def mathis_goodput_bps(rtt_s: float, loss: float, mss_bytes: int = _MSS_BYTES) -> float:
    """Mathis et al. (1997) steady-state TCP bound: MSS·8/RTT · sqrt(3/2)/sqrt(p)."""
    if loss <= 0 or rtt_s <= 0:
        return math.inf
    return mss_bytes * 8.0 / rtt_s * _MATHIS_C / math.sqrt(loss)


def synthesize_trace(
    name: str,
    mean_kbps: float,
    rtt_ms: float,
    loss: float,
    duration_s: float,
    seed: int,
) -> Trace:
    """A seeded, bursty throughput trace in 1 s steps.

    Model, per second ``k``:

    * link capacity ``c_k = mean · exp(x_k − σ²/2) · d_k`` where ``x_k`` is a
      Gaussian AR(1) log-process (coefficient 0.9, stationary σ = 0.35: slow
      lognormal fading) and ``d_k`` a dip factor: a two-state Markov chain enters
      a dip with probability 0.02 per second, stays with probability 0.8 (dips
      last 5 s on average) and while in a dip scales capacity by U(0.1, 0.35)
      (handovers, cross traffic).  The series is then rescaled so its mean is
      exactly ``mean_kbps``;
    * goodput ``g_k = min(c_k · (1 − loss), Mathis(RTT, loss))``: lost packets
      are retransmitted, and a TCP flow cannot exceed the Mathis et al. bound
      ``MSS·8/RTT · sqrt(3/2) / sqrt(loss)`` (MSS 1460 bytes);
    * a floor of 2 % of the mean, so a download always finishes.

    The trace carries ``rtt_s = rtt_ms / 1000``; the simulator adds one RTT per
    request on top of the goodput.
    """
    if mean_kbps <= 0 or duration_s < _SYNTH_STEP_S or not 0 <= loss < 1 or rtt_ms < 0:
        raise ValueError("need mean_kbps > 0, duration_s >= 1, 0 <= loss < 1, rtt_ms >= 0")
    rng = np.random.default_rng(seed)
    steps = int(duration_s // _SYNTH_STEP_S)
    innovations = rng.standard_normal(steps) * _LOG_SIGMA * math.sqrt(1 - _AR_COEFFICIENT**2)
    log_fading = np.empty(steps)
    level = rng.standard_normal() * _LOG_SIGMA
    for k in range(steps):
        level = _AR_COEFFICIENT * level + innovations[k]
        log_fading[k] = level
    dips = np.ones(steps)
    in_dip = False
    enter = rng.random(steps)
    depth = rng.uniform(*_DIP_FACTOR_RANGE, size=steps)
    for k in range(steps):
        in_dip = enter[k] < (_DIP_STAY_PROBABILITY if in_dip else _DIP_ENTER_PROBABILITY)
        if in_dip:
            dips[k] = depth[k]
    capacity = np.exp(log_fading - _LOG_SIGMA**2 / 2) * dips
    capacity *= mean_kbps * 1000.0 / float(capacity.mean())
    rtt_s = rtt_ms / 1000.0
    goodput = np.minimum(capacity * (1.0 - loss), mathis_goodput_bps(rtt_s, loss))
    goodput = np.maximum(goodput, _FLOOR_FRACTION * mean_kbps * 1000.0)
    return Trace(
        name=name,
        times_s=tuple(float(k * _SYNTH_STEP_S) for k in range(steps)),
        throughput_bps=tuple(float(value) for value in goodput),
        rtt_s=rtt_s,
    )


def format_trace(trace: Trace) -> str:
    """The text :func:`parse_trace` reads (throughput in Mb/s)."""
    return "".join(
        f"{time_s:g}\t{rate / 1e6:.6f}\n"
        for time_s, rate in zip(trace.times_s, trace.throughput_bps, strict=True)
    )
