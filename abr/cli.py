"""``cadenza abr simulate`` and ``cadenza ladder recommend``.

Exit status: 0 on success, 2 for a usage error (bad flags, unreadable or
malformed traces, an unusable ladder), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

from cadenza.abr.estimator import DualEwma
from cadenza.abr.ladder import recommend_ladder, render_ladder_toml, traces_from_estimates
from cadenza.abr.simulate import DEFAULT_AUDIO_LADDER_BPS, evaluate
from cadenza.abr.traces import Trace, TraceError, load_traces, scale_trace
from cadenza.manifests.model import Codec
from cadenza.origin.cmcd import from_json_object, parse_cmcd
from cadenza.origin.sessions import apply_cmcd

USAGE_ERROR = 2


class UsageError(Exception):
    pass


def parse_ladder_option(text: str, codec: Codec = Codec.AAC) -> list[int]:
    """``64,128,256`` (kb/s), or a ladder TOML/JSON file: that codec's rungs, in bit/s."""
    if all(part.strip().isdigit() for part in text.split(",")):
        values = sorted({int(part) * 1000 for part in text.split(",")})
        if not values or values[0] <= 0:
            raise UsageError(f"--ladder {text!r}: bitrates must be positive kb/s")
        return values
    path = Path(text)
    try:
        raw = path.read_text(encoding="utf-8")
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--ladder {text}: {exc}") from None
    rungs = data.get("rung", data.get("rungs", []))
    values = sorted(
        {
            int(r["bitrate_kbps"]) * 1000
            for r in rungs
            if isinstance(r, dict) and r.get("codec") == codec.value and "bitrate_kbps" in r
        }
    )
    if not values:
        raise UsageError(f"--ladder {text}: no {codec.value} rungs with bitrate_kbps")
    return values


def _load(directories: Sequence[Path], scale: float) -> list[Trace]:
    traces: list[Trace] = []
    for directory in directories:
        if not directory.is_dir():
            raise UsageError(f"--traces {directory}: not a folder")
        try:
            found = load_traces(directory)
        except TraceError as exc:
            raise UsageError(str(exc)) from None
        if not found:
            raise UsageError(f"--traces {directory}: no trace files in it")
        traces.extend(found)
    if scale != 1.0:
        traces = [scale_trace(trace, scale) for trace in traces]
    return traces


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


# -- cadenza abr -------------------------------------------------------------


def add_abr_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="abr_command", metavar="ACTION", required=True)
    sim = sub.add_parser("simulate", help="replay throughput traces through every ABR policy")
    sim.add_argument("--traces", type=Path, action="append", required=True, metavar="DIR")
    sim.add_argument("--ladder", default=None, help="kb/s list (64,128,256) or a ladder file")
    sim.add_argument("--segment-duration", type=_positive, default=4.0, metavar="S")
    sim.add_argument("--content-duration", type=_positive, default=180.0, metavar="S")
    sim.add_argument("--scale", type=_positive, default=1.0, help="multiply every trace")
    sim.add_argument("--json", action="store_true", help="print the JSON summary")


def _table(result: dict[str, object]) -> str:
    policies = result["policies"]
    assert isinstance(policies, dict)
    head = (
        f"{'policy':<16} {'QoE_lin':>9} {'QoE_perc':>9} {'kb/s':>7} "
        f"{'rebuf %':>8} {'sw/min':>7} {'start s':>8}"
    )
    lines = [f"{result['traces']} traces", head]
    for name, s in policies.items():
        lines.append(
            f"{name:<16} {s['qoe']:>9.2f} {s['qoe_perceptual']:>9.2f} "
            f"{s['bitrate_kbps']:>7.1f} {100 * s['rebuffer_ratio']:>8.2f} "
            f"{s['switches_per_min']:>7.2f} {s['startup_s']:>8.2f}"
        )
    return "\n".join(lines)


def run_abr(args: argparse.Namespace) -> int:
    try:
        ladder = parse_ladder_option(args.ladder) if args.ladder else list(DEFAULT_AUDIO_LADDER_BPS)
        traces = _load(args.traces, args.scale)
        if args.segment_duration > args.content_duration:
            raise UsageError("--segment-duration is longer than --content-duration")
    except UsageError as exc:
        print(f"cadenza abr simulate: {exc}", file=sys.stderr)
        return USAGE_ERROR
    result = evaluate(
        traces,
        ladder,
        segment_duration_s=args.segment_duration,
        content_duration_s=args.content_duration,
    )
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


# -- cadenza ladder ----------------------------------------------------------


def add_ladder_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ladder_command", metavar="ACTION", required=True)
    rec = sub.add_parser("recommend", help="choose the bitrates to package for an audience")
    source = rec.add_mutually_exclusive_group(required=True)
    source.add_argument("--traces", type=Path, action="append", metavar="DIR")
    source.add_argument(
        "--beacons", type=Path, metavar="FILE", help="CMCD beacons, one per line (CMCD or JSON)"
    )
    rec.add_argument("--codec", choices=["aac", "opus"], default="aac")
    rec.add_argument("--max-rungs", type=int, default=4, metavar="K")
    rec.add_argument("--segment-duration", type=_positive, default=4.0, metavar="S")
    rec.add_argument("--scale", type=_positive, default=1.0, help="multiply every trace")
    rec.add_argument("--out", type=Path, default=None, help="ladder TOML (stdout if omitted)")


def session_estimates_from_beacons(lines: Sequence[str]) -> list[float]:
    """Each session's final throughput estimate (bit/s) from its beacons, in order."""
    from cadenza.origin.sessions import SessionState

    sessions: dict[str, SessionState] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"beacons line {number}: not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise UsageError(f"beacons line {number}: expected a JSON object")
            cmcd = from_json_object(data)
        else:
            cmcd = parse_cmcd(text)
        sid = cmcd.string("sid")
        if not sid:
            continue
        state, _ = apply_cmcd(sessions.get(sid), cmcd, float(number), sid=sid, is_request=False)
        sessions[sid] = state
    return [
        s.estimator.estimate_bps()
        for s in sessions.values()
        if s.estimator.can_estimate and s.estimator != DualEwma.create()
    ]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def run_ladder(args: argparse.Namespace) -> int:
    codec = Codec(args.codec)
    try:
        if not 1 <= args.max_rungs <= 6:
            raise UsageError("--max-rungs must be 1..6")
        if args.traces:
            traces = _load(args.traces, args.scale)
        else:
            try:
                lines = args.beacons.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--beacons {args.beacons}: {exc}") from None
            estimates = session_estimates_from_beacons(lines)
            if not estimates:
                raise UsageError(f"--beacons {args.beacons}: no session carried a throughput")
            traces = traces_from_estimates([e * args.scale for e in estimates])
    except UsageError as exc:
        print(f"cadenza ladder recommend: {exc}", file=sys.stderr)
        return USAGE_ERROR
    recommendation = recommend_ladder(
        traces,
        codec=codec,
        max_rungs=args.max_rungs,
        segment_duration_s=args.segment_duration,
    )
    toml = render_ladder_toml(recommendation)
    if args.out is None:
        sys.stdout.write(toml)
    else:
        _write_atomically(args.out, toml)
    print(
        f"recommended {codec.value} ladder {list(recommendation.bitrates_kbps)} kb/s: "
        f"perceptual QoE {recommendation.qoe_perceptual:.3f} vs "
        f"{recommendation.baseline_qoe_perceptual:.3f} for the default "
        f"{list(recommendation.baseline_kbps)} over {recommendation.traces} traces",
        file=sys.stderr,
    )
    return 0
