"""``cadenza ladder recommend``: choose the bitrates to package for an audience.

Exit status: 0 on success, 1 when the ladder file cannot be written, 2 for a
usage error (bad flags, unreadable or malformed traces or beacons), with a
one-line reason on stderr.

The recommendation never scores below the current ladder (``--current``, the
packager's default if omitted) on its input; if nothing beats it, the current
ladder is printed and stderr says so.  ``--holdout F`` fits on the rest and
reports both ladders' QoE on a held-out share F of the traces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cadenza.abr.ladder import (
    Outcome,
    Recommendation,
    recommend_ladder,
    render_ladder_toml,
    traces_from_estimates,
)
from cadenza.abr_command import USAGE_ERROR, positive
from cadenza.abr_io import UsageError, read_beacon_estimates, read_ladder_option, read_traces
from cadenza.manifests.ladder import MAX_RUNGS
from cadenza.manifests.model import Codec
from cadenza.store.atomic import write_atomic
from cadenza.store.errors import LocalFileError

OUTPUT_ERROR = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ladder_command", metavar="ACTION", required=True)
    rec = sub.add_parser("recommend", help="choose the bitrates to package for an audience")
    source = rec.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--traces",
        type=Path,
        action="append",
        metavar="DIR",
        help="a folder of trace files (or one trace file); repeatable",
    )
    source.add_argument(
        "--beacons", type=Path, metavar="FILE", help="CMCD beacons, one per line (CMCD or JSON)"
    )
    rec.add_argument("--codec", choices=["aac", "opus"], default="aac")
    rec.add_argument(
        "--max-rungs", type=int, default=4, metavar="K", help=f"1..{MAX_RUNGS} (default 4)"
    )
    rec.add_argument("--segment-duration", type=positive, default=4.0, metavar="S")
    rec.add_argument("--scale", type=positive, default=1.0, help="multiply every trace")
    rec.add_argument("--out", type=Path, default=None, help="ladder TOML (stdout if omitted)")
    rec.add_argument(
        "--current",
        default=None,
        metavar="LADDER",
        help="what is packaged now: kb/s list, preset or ladder file (default: the default ladder)",
    )
    rec.add_argument(
        "--holdout",
        type=_fraction,
        default=None,
        metavar="F",
        help="fit on the rest, report QoE on this share of the traces (0 < F < 1)",
    )


def _fraction(text: str) -> float:
    value = positive(text)
    if not value < 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _summary(codec: Codec, recommendation: Recommendation) -> str:
    r = recommendation
    if r.outcome is Outcome.KEPT_CURRENT:
        head = (
            f"kept the current {codec.value} ladder {list(r.baseline_kbps)} kb/s: the best "
            f"found, {list(r.best_found_kbps)}, scores below it"
        )
    else:
        head = f"recommended {codec.value} ladder {list(r.bitrates_kbps)} kb/s"
    text = (
        f"{head}: perceptual QoE {r.qoe_perceptual:.3f} vs {r.baseline_qoe_perceptual:.3f} "
        f"for the current {list(r.baseline_kbps)} over {r.traces} traces"
    )
    if r.holdout is not None:
        text += (
            f"; held out ({r.holdout.traces} traces): {r.holdout.qoe_perceptual:.3f} vs "
            f"{r.holdout.baseline_qoe_perceptual:.3f}"
        )
    return text


def run(args: argparse.Namespace) -> int:
    codec = Codec(args.codec)
    try:
        if not 1 <= args.max_rungs <= MAX_RUNGS:
            raise UsageError(f"--max-rungs must be 1..{MAX_RUNGS}")
        if args.traces:
            traces = read_traces(args.traces, args.scale)
        else:
            estimates = read_beacon_estimates(args.beacons)
            if not estimates:
                raise UsageError(f"--beacons {args.beacons}: no session carried a throughput")
            traces = traces_from_estimates([e * args.scale for e in estimates])
        current = (
            [bps // 1000 for bps in read_ladder_option(args.current, codec)]
            if args.current
            else None
        )
        if args.holdout is not None and len(traces) < 2:
            raise UsageError("--holdout needs at least two traces")
    except UsageError as exc:
        print(f"cadenza ladder recommend: {exc}", file=sys.stderr)
        return USAGE_ERROR
    recommendation = recommend_ladder(
        traces,
        codec=codec,
        max_rungs=args.max_rungs,
        segment_duration_s=args.segment_duration,
        current_kbps=current,
        holdout=args.holdout,
    )
    toml = render_ladder_toml(recommendation)
    if args.out is None:
        sys.stdout.write(toml)
    else:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.out, toml)
        except OSError as exc:
            print(f"cadenza ladder recommend: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return OUTPUT_ERROR
        except LocalFileError as exc:
            print(f"cadenza ladder recommend: {exc}", file=sys.stderr)
            return OUTPUT_ERROR
    print(_summary(codec, recommendation), file=sys.stderr)
    return 0
