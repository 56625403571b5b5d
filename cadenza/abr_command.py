"""``cadenza abr simulate``: replay throughput traces through every ABR policy.

Exit status: 0 on success, 2 for a usage error (bad flags, unreadable or
malformed traces, an unusable ladder), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cadenza.abr.sim.evaluation import DEFAULT_AUDIO_LADDER_BPS, evaluate
from cadenza.abr_io import UsageError, read_ladder_option, read_traces
from cadenza.manifests.model import Codec

USAGE_ERROR = 2


def positive(text: str) -> float:
    """An argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="abr_command", metavar="ACTION", required=True)
    sim = sub.add_parser("simulate", help="replay throughput traces through every ABR policy")
    sim.add_argument(
        "--traces",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="a folder of trace files (or one trace file); repeatable",
    )
    sim.add_argument(
        "--ladder", default=None, help="kb/s list (64,128,256), a ladder preset or a ladder file"
    )
    sim.add_argument(
        "--codec",
        choices=["aac", "opus"],
        default=None,
        help="whose rungs of a ladder preset or file to play (default: aac, else opus)",
    )
    sim.add_argument("--segment-duration", type=positive, default=4.0, metavar="S")
    sim.add_argument("--content-duration", type=positive, default=180.0, metavar="S")
    sim.add_argument("--scale", type=positive, default=1.0, help="multiply every trace")
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


def run(args: argparse.Namespace) -> int:
    try:
        codec = Codec(args.codec) if args.codec else None
        ladder = read_ladder_option(args.ladder, codec) if args.ladder else DEFAULT_AUDIO_LADDER_BPS
        traces = read_traces(args.traces, args.scale)
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
