"""``cadenza ladder recommend``: choose the bitrates to package for an audience.

Exit status: 0 on success, 1 when the ladder file cannot be written, 2 for a
usage error (bad flags, unreadable or malformed traces or beacons), with a
one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cadenza.abr.ladder import recommend_ladder, render_ladder_toml, traces_from_estimates
from cadenza.abr_command import USAGE_ERROR, positive
from cadenza.abr_io import UsageError, read_beacon_estimates, read_traces
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
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.out, toml)
        except OSError as exc:
            print(f"cadenza ladder recommend: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return OUTPUT_ERROR
        except LocalFileError as exc:
            print(f"cadenza ladder recommend: {exc}", file=sys.stderr)
            return OUTPUT_ERROR
    print(
        f"recommended {codec.value} ladder {list(recommendation.bitrates_kbps)} kb/s: "
        f"perceptual QoE {recommendation.qoe_perceptual:.3f} vs "
        f"{recommendation.baseline_qoe_perceptual:.3f} for the default "
        f"{list(recommendation.baseline_kbps)} over {recommendation.traces} traces",
        file=sys.stderr,
    )
    return 0
