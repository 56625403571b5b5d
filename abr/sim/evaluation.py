"""Every policy over a trace set: population priors, leave-one-out guidance, and the
summaries ``cadenza abr simulate`` prints.

Each session's population prior is of the other traces of its set (leave one
out): guided players get it as the origin's session-start guidance, the
``origin`` players as the origin controller's prior."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np

from cadenza.abr.policy import DEFAULT_POLICY, Guidance, PolicyConfig, Population, decide
from cadenza.abr.sim.baselines import Bba, RobustMpc
from cadenza.abr.sim.optimum import OfflineOptimal
from cadenza.abr.sim.origin import OriginDecided
from cadenza.abr.sim.players import DashJsDynamic, HlsJs, Shaka
from cadenza.abr.sim.qoe import (
    average_bitrate_kbps,
    qoe_lin,
    qoe_perceptual,
    rebuffer_ratio,
    switches_per_min,
)
from cadenza.abr.sim.session import (
    DEFAULT_BUFFER_CAP_S,
    DEFAULT_CONTENT_DURATION_S,
    DEFAULT_SEGMENT_DURATION_S,
    Policy,
    SessionResult,
    simulate,
)
from cadenza.abr.traces import Trace
from cadenza.manifests.ladder import DEFAULT_LADDER
from cadenza.manifests.model import Codec

# The AAC rungs of the default packaging ladder.
DEFAULT_AUDIO_LADDER_BPS: Final = DEFAULT_LADDER.bitrates_bps(Codec.AAC)
# Leave-one-out population priors use each session's mean over its first minute.
POPULATION_WINDOW_S: Final = 60.0


def population_from_traces(
    traces: Sequence[Trace], key: str = "", window_s: float = POPULATION_WINDOW_S
) -> Population:
    """A population prior whose sessions' estimates are each trace's mean over ``window_s``."""
    if not traces:
        raise ValueError("a population needs at least one trace")
    means = np.array([trace.mean_bps(window_s) for trace in traces], dtype=np.float64)
    p10, p25, p50, p90 = (float(np.percentile(means, q)) for q in (10, 25, 50, 90))
    return Population(key, len(traces), p10, p25, p50, p90)


def leave_one_out_populations(
    traces: Sequence[Trace], key: str = "", window_s: float = POPULATION_WINDOW_S
) -> list[Population | None]:
    """For each trace, the population prior of the others (None for a lone trace)."""
    populations: list[Population | None] = []
    for i in range(len(traces)):
        others = [trace for j, trace in enumerate(traces) if j != i]
        populations.append(population_from_traces(others, key, window_s) if others else None)
    return populations


def leave_one_out_guidance(
    traces: Sequence[Trace],
    ladder_bps: Sequence[int],
    *,
    key: str = "",
    window_s: float = POPULATION_WINDOW_S,
    config: PolicyConfig = DEFAULT_POLICY,
) -> list[Guidance]:
    """The origin's session-start guidance for each trace, from the other traces' prior."""
    return [
        decide(list(ladder_bps), None, population, 0.0, config)
        for population in leave_one_out_populations(traces, key, window_s)
    ]


def default_policies() -> list[Policy[Any]]:
    """Every policy, in reporting order."""
    return [
        HlsJs(),
        HlsJs(guided=True),
        DashJsDynamic(),
        DashJsDynamic(guided=True),
        Shaka(),
        Bba(),
        RobustMpc(),
        OriginDecided(),
        OriginDecided(redirect=False),
        OfflineOptimal(),
    ]


def session_of(
    policy: Policy[Any], trace: Trace, population: Population | None
) -> tuple[Policy[Any], Trace]:
    """The policy and trace of one session: an origin-decided player gets the
    session's population prior and pays its redirects."""
    if isinstance(policy, OriginDecided):
        return replace(policy, population=population), policy.session_trace(trace)
    return policy, trace


@dataclass(frozen=True, slots=True)
class Summary:
    qoe: float
    qoe_perceptual: float
    bitrate_kbps: float
    rebuffer_ratio: float
    switches_per_min: float
    startup_s: float

    def to_dict(self) -> dict[str, float]:
        return {
            "qoe": self.qoe,
            "qoe_perceptual": self.qoe_perceptual,
            "bitrate_kbps": self.bitrate_kbps,
            "rebuffer_ratio": self.rebuffer_ratio,
            "switches_per_min": self.switches_per_min,
            "startup_s": self.startup_s,
        }


def summarize(results: Sequence[SessionResult]) -> Summary:
    """Means over sessions."""
    if not results:
        raise ValueError("nothing to summarise")

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values))

    return Summary(
        qoe=mean([qoe_lin(r) for r in results]),
        qoe_perceptual=mean([qoe_perceptual(r) for r in results]),
        bitrate_kbps=mean([average_bitrate_kbps(r) for r in results]),
        rebuffer_ratio=mean([rebuffer_ratio(r) for r in results]),
        switches_per_min=mean([switches_per_min(r) for r in results]),
        startup_s=mean([r.startup_s for r in results]),
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every session of every policy over a trace set."""

    traces: tuple[str, ...]
    sessions: Mapping[str, tuple[SessionResult, ...]] = field(default_factory=dict)

    def summaries(self) -> dict[str, Summary]:
        return {name: summarize(results) for name, results in self.sessions.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "traces": len(self.traces),
            "policies": {name: s.to_dict() for name, s in self.summaries().items()},
        }


def run_evaluation(
    traces: Sequence[Trace],
    ladder_bps: Sequence[int],
    policies: Sequence[Policy[Any]],
    *,
    key: str = "",
    segment_duration_s: float = DEFAULT_SEGMENT_DURATION_S,
    content_duration_s: float = DEFAULT_CONTENT_DURATION_S,
    buffer_cap_s: float = DEFAULT_BUFFER_CAP_S,
    startup_threshold_s: float | None = None,
    population_window_s: float = POPULATION_WINDOW_S,
    config: PolicyConfig = DEFAULT_POLICY,
) -> Evaluation:
    """Simulate every policy on every trace; guidance is leave-one-out per trace."""
    if not traces:
        raise ValueError("no traces")
    populations = leave_one_out_populations(traces, key, population_window_s)
    guidance = [decide(list(ladder_bps), None, p, 0.0, config) for p in populations]
    sessions: dict[str, tuple[SessionResult, ...]] = {}
    for policy in policies:
        if policy.name in sessions:
            raise ValueError(f"two policies are called {policy.name}")
        results: list[SessionResult] = []
        for trace, guide, population in zip(traces, guidance, populations, strict=True):
            session_policy, session_trace = session_of(policy, trace, population)
            results.append(
                simulate(
                    session_trace,
                    ladder_bps,
                    session_policy,
                    segment_duration_s=segment_duration_s,
                    content_duration_s=content_duration_s,
                    buffer_cap_s=buffer_cap_s,
                    startup_threshold_s=startup_threshold_s,
                    guide=guide,
                )
            )
        sessions[policy.name] = tuple(results)
    return Evaluation(tuple(trace.name for trace in traces), sessions)


def evaluate(
    traces: Sequence[Trace],
    ladder_bps: Sequence[int] = DEFAULT_AUDIO_LADDER_BPS,
    policies: Sequence[Policy[Any]] | None = None,
    *,
    key: str = "",
    segment_duration_s: float = DEFAULT_SEGMENT_DURATION_S,
    content_duration_s: float = DEFAULT_CONTENT_DURATION_S,
    buffer_cap_s: float = DEFAULT_BUFFER_CAP_S,
    startup_threshold_s: float | None = None,
    population_window_s: float = POPULATION_WINDOW_S,
    config: PolicyConfig = DEFAULT_POLICY,
) -> dict[str, object]:
    """``{"traces": N, "policies": {name: {"qoe": mean, ...}}}`` over ``traces``."""
    return run_evaluation(
        traces,
        ladder_bps,
        default_policies() if policies is None else policies,
        key=key,
        segment_duration_s=segment_duration_s,
        content_duration_s=content_duration_s,
        buffer_cap_s=buffer_cap_s,
        startup_threshold_s=startup_threshold_s,
        population_window_s=population_window_s,
        config=config,
    ).to_dict()
