"""Which bitrates to package: a ladder tuned to the audience's networks.

Given throughput traces (measured, or synthesised from the session
estimates the origin has collected), :func:`recommend_ladder` tries every
ladder of at most ``max_rungs`` rungs drawn from a codec's candidate
bitrates, plays each over every trace in the simulator with the hls.js and
dash.js policies, and keeps the ladder with the best mean perceptual QoE.

Perceptual QoE, not QoE_lin, is the objective: QoE_lin's rebuffer penalty is
the ladder's own top bitrate, so it would reward any ladder for adding a
high rung whether or not listeners hear it.  The perceptual utility
saturates around 128-192 kb/s, as audio quality does.

Which traces: all of them up to :data:`MAX_TRACES`; beyond that a sample
stratified by mean throughput that keeps the slowest stratum whole
(:func:`stratified_sample`), since the slow tail is where a ladder's bottom
rungs earn their keep.  Never worse than what is packaged now: a ladder that
scores below the current one on the whole input is not recommended; the
current ladder comes back with :attr:`Outcome.KEPT_CURRENT`.  With a holdout
(:func:`split_holdout`) the ladder is fitted on one part of the traces and both
ladders are scored on the other.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from cadenza.abr.sim.players import DashJsDynamic, HlsJs
from cadenza.abr.sim.qoe import qoe_perceptual
from cadenza.abr.sim.session import Policy, simulate
from cadenza.abr.traces import Trace, synthesize_trace
from cadenza.manifests.ladder import DEFAULT_LADDER, MAX_RUNGS
from cadenza.manifests.model import Codec

CANDIDATES_KBPS: Final = {
    Codec.AAC: (32, 48, 64, 96, 128, 160, 192, 256, 320),
    Codec.OPUS: (24, 32, 48, 64, 96, 128, 160, 192, 256),
}
# Up to this many traces are all used; more are sampled (see stratified_sample).
MAX_TRACES: Final = 48
STRATA: Final = 4
CONTENT_DURATION_S: Final = 120.0


class Outcome(enum.StrEnum):
    # The best ladder found scores at least as well as the current one.
    RECOMMENDED = "recommended"
    # Nothing found beats the current ladder on the input: it is kept.
    KEPT_CURRENT = "kept-current"


@dataclass(frozen=True, slots=True)
class Holdout:
    """Both ladders scored on traces the recommendation was not fitted on."""

    traces: int
    qoe_perceptual: float
    baseline_qoe_perceptual: float

    def to_dict(self) -> dict[str, object]:
        return {
            "traces": self.traces,
            "qoe_perceptual": round(self.qoe_perceptual, 4),
            "baseline_qoe_perceptual": round(self.baseline_qoe_perceptual, 4),
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    codec: Codec
    bitrates_kbps: tuple[int, ...]
    qoe_perceptual: float
    baseline_kbps: tuple[int, ...]
    baseline_qoe_perceptual: float
    traces: int
    ladders_tried: int
    outcome: Outcome = Outcome.RECOMMENDED
    # The search's own best when it lost to the current ladder (else the recommendation).
    best_found_kbps: tuple[int, ...] = ()
    holdout: Holdout | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "codec": self.codec.value,
            "bitrates_kbps": list(self.bitrates_kbps),
            "qoe_perceptual": round(self.qoe_perceptual, 4),
            "baseline_kbps": list(self.baseline_kbps),
            "baseline_qoe_perceptual": round(self.baseline_qoe_perceptual, 4),
            "traces": self.traces,
            "ladders_tried": self.ladders_tried,
            "outcome": self.outcome.value,
            "best_found_kbps": list(self.best_found_kbps),
            "holdout": None if self.holdout is None else self.holdout.to_dict(),
        }


def by_mean_throughput(traces: Sequence[Trace]) -> list[Trace]:
    """Slowest first; ties by name, so the order does not depend on the input's."""
    return sorted(traces, key=lambda trace: (trace.mean_bps(), trace.name))


def stratified_positions(count: int, limit: int, strata: int = STRATA) -> list[int]:
    """Which of ``count`` items, sorted slowest first, a sample of ``limit`` keeps.

    All of them if ``count <= limit``.  Else the slowest stratum, the slowest
    ``limit // strata``, whole; the others split into ``strata − 1`` equal
    strata that share the rest of the budget, evenly spaced within each (so
    the fastest is always kept).
    """
    if strata < 2 or limit < strata:
        raise ValueError("need at least two strata and a limit of one trace per stratum")
    if count <= limit:
        return list(range(count))
    tail = limit // strata
    picked = list(range(tail))
    others = strata - 1
    budget = limit - tail
    bounds = [tail + round(i * (count - tail) / others) for i in range(others + 1)]
    for i in range(others):
        low, high = bounds[i], bounds[i + 1]
        share = min(budget * (i + 1) // others - budget * i // others, high - low)
        if share <= 0:
            continue
        spots = np.linspace(low, high - 1, share).round().astype(int)
        picked.extend(sorted({int(k) for k in spots}))
    return picked


def stratified_sample(traces: Sequence[Trace], limit: int, strata: int = STRATA) -> list[Trace]:
    """Every trace if there are at most ``limit``; else a sample stratified by mean
    throughput that keeps the slowest traces whole (:func:`stratified_positions`).
    Deterministic, whatever the input's order."""
    if len(traces) <= limit:
        return list(traces)
    ordered = by_mean_throughput(traces)
    return [ordered[i] for i in stratified_positions(len(ordered), limit, strata)]


def split_holdout(traces: Sequence[Trace], fraction: float) -> tuple[list[Trace], list[Trace]]:
    """(fit, held out), deterministic and stratified: in mean-throughput order the
    traces fall into ``round(fraction · n)`` equal strata and the middle trace of
    each is held out, so both parts span the whole range.  Each keeps one trace."""
    if not 0 < fraction < 1:
        raise ValueError("the holdout fraction must be between 0 and 1")
    if len(traces) < 2:
        raise ValueError("a holdout needs at least two traces")
    ordered = by_mean_throughput(traces)
    count = min(max(round(fraction * len(ordered)), 1), len(ordered) - 1)
    stratum = len(ordered) / count
    held_at = {math.floor((j + 0.5) * stratum) for j in range(count)}
    fit = [trace for i, trace in enumerate(ordered) if i not in held_at]
    held = [trace for i, trace in enumerate(ordered) if i in held_at]
    return fit, held


def expected_qoe(
    traces: Sequence[Trace],
    ladder_kbps: Sequence[int],
    policies: Sequence[Policy[Any]],
    *,
    segment_duration_s: float,
    content_duration_s: float = CONTENT_DURATION_S,
) -> float:
    """Mean perceptual QoE of ``policies`` playing ``ladder_kbps`` over ``traces``."""
    ladder_bps = [kbps * 1000 for kbps in sorted(ladder_kbps)]
    scores = [
        qoe_perceptual(
            simulate(
                trace,
                ladder_bps,
                policy,
                segment_duration_s=segment_duration_s,
                content_duration_s=content_duration_s,
            )
        )
        for trace in traces
        for policy in policies
    ]
    return float(np.mean(scores))


def recommend_ladder(
    traces: Sequence[Trace],
    *,
    codec: Codec = Codec.AAC,
    max_rungs: int = 4,
    segment_duration_s: float = 4.0,
    candidates_kbps: Sequence[int] | None = None,
    current_kbps: Sequence[int] | None = None,
    holdout: float | None = None,
) -> Recommendation:
    """The ladder of at most ``max_rungs`` rungs with the best expected QoE.

    Ties go to the ladder with fewer rungs (less to encode, store and cache),
    then to the lower bitrates.  ``current_kbps`` is what is packaged now (the
    packager's default ladder if None); the result never scores below it on
    the traces it was fitted on.  ``holdout`` (a fraction) fits on the rest of
    the traces and scores both ladders on the held-out part
    (:func:`split_holdout`).
    """
    if holdout is not None:
        fit, held = split_holdout(traces, holdout)
        result = recommend_ladder(
            fit,
            codec=codec,
            max_rungs=max_rungs,
            segment_duration_s=segment_duration_s,
            candidates_kbps=candidates_kbps,
            current_kbps=current_kbps,
        )
        policies: list[Policy[Any]] = [HlsJs(), DashJsDynamic()]
        scored = Holdout(
            traces=len(held),
            qoe_perceptual=expected_qoe(
                held, result.bitrates_kbps, policies, segment_duration_s=segment_duration_s
            ),
            baseline_qoe_perceptual=expected_qoe(
                held, result.baseline_kbps, policies, segment_duration_s=segment_duration_s
            ),
        )
        return replace(result, holdout=scored)
    return _recommend(traces, codec, max_rungs, segment_duration_s, candidates_kbps, current_kbps)


def _recommend(
    traces: Sequence[Trace],
    codec: Codec,
    max_rungs: int,
    segment_duration_s: float,
    candidates_kbps: Sequence[int] | None,
    current_kbps: Sequence[int] | None,
) -> Recommendation:
    if codec is Codec.FLAC:
        raise ValueError("FLAC is lossless: it has no bitrate ladder to tune")
    if not traces:
        raise ValueError("no traces to tune the ladder on")
    if not 1 <= max_rungs <= MAX_RUNGS:
        raise ValueError(f"max_rungs must be 1..{MAX_RUNGS}")
    candidates = tuple(sorted(set(candidates_kbps or CANDIDATES_KBPS[codec])))
    sample = stratified_sample(traces, MAX_TRACES)
    policies: list[Policy[Any]] = [HlsJs(), DashJsDynamic()]
    best: tuple[float, int, tuple[int, ...]] | None = None
    tried = 0
    for size in range(1, min(max_rungs, len(candidates)) + 1):
        for ladder in itertools.combinations(candidates, size):
            tried += 1
            score = expected_qoe(sample, ladder, policies, segment_duration_s=segment_duration_s)
            key = (round(score, 6), -size, tuple(-k for k in ladder))
            if best is None or key > (best[0], -len(best[2]), tuple(-k for k in best[2])):
                best = (round(score, 6), size, ladder)
    assert best is not None
    # What is packaged now (by default the packager's default ladder): the baseline.
    baseline = tuple(
        sorted(current_kbps)
        if current_kbps
        else (bps // 1000 for bps in DEFAULT_LADDER.bitrates_bps(codec))
    )
    # Judged on every trace, not the sample the search ran on.
    best_qoe = expected_qoe(traces, best[2], policies, segment_duration_s=segment_duration_s)
    baseline_qoe = expected_qoe(traces, baseline, policies, segment_duration_s=segment_duration_s)
    kept = best_qoe < baseline_qoe
    return Recommendation(
        codec=codec,
        bitrates_kbps=baseline if kept else best[2],
        qoe_perceptual=baseline_qoe if kept else best_qoe,
        baseline_kbps=baseline,
        baseline_qoe_perceptual=baseline_qoe,
        traces=len(traces),
        ladders_tried=tried,
        outcome=Outcome.KEPT_CURRENT if kept else Outcome.RECOMMENDED,
        best_found_kbps=best[2],
    )


def traces_from_estimates(estimates_bps: Sequence[float], *, seed: int = 7) -> list[Trace]:
    """One synthetic trace per observed session, around that session's throughput.

    Beacons give each session's throughput, not its variation over time, so
    each becomes a seeded trace with the synthetic model's fading and dips
    (see :func:`cadenza.abr.traces.synthesize_trace`), 80 ms RTT, 0.1 % loss.
    """
    positive = sorted(e for e in estimates_bps if e > 0)
    picks = [positive[i] for i in stratified_positions(len(positive), MAX_TRACES)]
    return [
        synthesize_trace(f"session-{i}", rate / 1000.0, 80.0, 0.001, 300.0, seed + i)
        for i, rate in enumerate(picks)
    ]


def render_ladder_toml(recommendation: Recommendation, name: str = "recommended") -> str:
    """A ladder file ``cadenza package --ladder`` reads."""
    lines = [
        f'name = "{name}"',
        f"# expected perceptual QoE {recommendation.qoe_perceptual:.4f} over "
        f"{recommendation.traces} traces (current ladder: "
        f"{recommendation.baseline_qoe_perceptual:.4f}); {recommendation.outcome.value}",
    ]
    if recommendation.holdout is not None:
        held = recommendation.holdout
        lines.append(
            f"# held out: {held.qoe_perceptual:.4f} vs {held.baseline_qoe_perceptual:.4f} "
            f"for the current ladder over {held.traces} traces"
        )
    for kbps in recommendation.bitrates_kbps:
        lines += [
            "",
            "[[rung]]",
            f'codec = "{recommendation.codec.value}"',
            f"bitrate_kbps = {kbps}",
        ]
    return "\n".join(lines) + "\n"
