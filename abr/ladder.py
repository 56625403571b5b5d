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
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
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
MAX_TRACES: Final = 24
CONTENT_DURATION_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class Recommendation:
    codec: Codec
    bitrates_kbps: tuple[int, ...]
    qoe_perceptual: float
    baseline_kbps: tuple[int, ...]
    baseline_qoe_perceptual: float
    traces: int
    ladders_tried: int

    def to_dict(self) -> dict[str, object]:
        return {
            "codec": self.codec.value,
            "bitrates_kbps": list(self.bitrates_kbps),
            "qoe_perceptual": round(self.qoe_perceptual, 4),
            "baseline_kbps": list(self.baseline_kbps),
            "baseline_qoe_perceptual": round(self.baseline_qoe_perceptual, 4),
            "traces": self.traces,
            "ladders_tried": self.ladders_tried,
        }


def _subsample(traces: Sequence[Trace], limit: int) -> list[Trace]:
    if len(traces) <= limit:
        return list(traces)
    picks = np.linspace(0, len(traces) - 1, limit).round().astype(int)
    return [traces[int(i)] for i in picks]


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
) -> Recommendation:
    """The ladder of at most ``max_rungs`` rungs with the best expected QoE.

    Ties go to the ladder with fewer rungs (less to encode, store and cache),
    then to the lower bitrates.
    """
    if codec is Codec.FLAC:
        raise ValueError("FLAC is lossless: it has no bitrate ladder to tune")
    if not traces:
        raise ValueError("no traces to tune the ladder on")
    if not 1 <= max_rungs <= MAX_RUNGS:
        raise ValueError(f"max_rungs must be 1..{MAX_RUNGS}")
    candidates = tuple(sorted(set(candidates_kbps or CANDIDATES_KBPS[codec])))
    sample = _subsample(traces, MAX_TRACES)
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
    # The packager's default ladder, the baseline a recommendation is compared with.
    baseline = tuple(bps // 1000 for bps in DEFAULT_LADDER.bitrates_bps(codec))
    return Recommendation(
        codec=codec,
        bitrates_kbps=best[2],
        qoe_perceptual=best[0],
        baseline_kbps=baseline,
        baseline_qoe_perceptual=expected_qoe(
            sample, baseline, policies, segment_duration_s=segment_duration_s
        ),
        traces=len(sample),
        ladders_tried=tried,
    )


def traces_from_estimates(estimates_bps: Sequence[float], *, seed: int = 7) -> list[Trace]:
    """One synthetic trace per observed session, around that session's throughput.

    Beacons give each session's throughput, not its variation over time, so
    each becomes a seeded trace with the synthetic model's fading and dips
    (see :func:`cadenza.abr.traces.synthesize_trace`), 80 ms RTT, 0.1 % loss.
    """
    positive = sorted(e for e in estimates_bps if e > 0)
    if len(positive) > MAX_TRACES:
        spread = np.linspace(0, len(positive) - 1, MAX_TRACES).round().astype(int)
        positive = [positive[int(i)] for i in spread]
    picks = positive
    return [
        synthesize_trace(f"session-{i}", rate / 1000.0, 80.0, 0.001, 300.0, seed + i)
        for i, rate in enumerate(picks)
    ]


def render_ladder_toml(recommendation: Recommendation, name: str = "recommended") -> str:
    """A ladder file ``cadenza package --ladder`` reads."""
    lines = [
        f'name = "{name}"',
        f"# expected perceptual QoE {recommendation.qoe_perceptual:.4f} over "
        f"{recommendation.traces} traces (default ladder: "
        f"{recommendation.baseline_qoe_perceptual:.4f})",
    ]
    for kbps in recommendation.bitrates_kbps:
        lines += [
            "",
            "[[rung]]",
            f'codec = "{recommendation.codec.value}"',
            f"bitrate_kbps = {kbps}",
        ]
    return "\n".join(lines) + "\n"
