"""``cadenza package INPUT... --out DIR``: the batch packaging command.

Exit status: 0 when every track is packaged or already complete, 1 when any
track fails (the others still complete), 2 for a usage error (bad flags, an
invalid ladder, an unusable ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packager.args import segment_duration
from packager.batch import default_jobs, expand_inputs, run_batch
from packager.errors import LadderError, OutputError
from packager.ladder import PRESETS, load_ladder
from packager.output import prepare_output_root
from packager.track import DEFAULT_SEGMENT_DURATION, PackageOptions

USAGE_ERROR = 2
DEFAULT_TRACK_TIMEOUT_S = 3600.0


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="audio or video files FFmpeg can read, or folders of them",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder; each track goes to DIR/<track_id>/",
    )
    parser.add_argument(
        "--ladder",
        default="music",
        metavar="FILE|PRESET",
        help=f"ladder preset ({', '.join(PRESETS)}) or .toml/.json file (default: music)",
    )
    parser.add_argument(
        "--segment-duration",
        type=segment_duration,
        default=DEFAULT_SEGMENT_DURATION,
        metavar="S",
        help="target segment duration in seconds (default: 4)",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=default_jobs(),
        metavar="N",
        help="tracks packaged in parallel (default: CPU count)",
    )
    parser.add_argument(
        "--track-timeout",
        type=_seconds,
        default=DEFAULT_TRACK_TIMEOUT_S,
        metavar="S",
        help="give up on a track after S seconds; each track runs in its own process "
        f"(default: {DEFAULT_TRACK_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--single-file",
        action="store_true",
        help="one file per rendition with byte ranges (HLS BYTERANGE, DASH on-demand SegmentBase)",
    )
    parser.add_argument(
        "--force", action="store_true", help="repackage tracks that are already complete"
    )


def run(args: argparse.Namespace) -> int:
    try:
        ladder = load_ladder(args.ladder)
    except LadderError as exc:
        print(f"cadenza package: {exc}", file=sys.stderr)
        return USAGE_ERROR
    try:
        prepare_output_root(args.out)
    except OutputError as exc:
        print(f"cadenza package: {exc}", file=sys.stderr)
        return USAGE_ERROR
    options = PackageOptions(
        ladder=ladder,
        segment_duration=args.segment_duration,
        single_file=args.single_file,
        force=args.force,
    )
    inputs = expand_inputs(args.inputs)
    if not inputs:
        print("cadenza package: no media files found in the given folders", file=sys.stderr)
        return USAGE_ERROR
    try:
        summary = run_batch(inputs, args.out, options, jobs=args.jobs, timeout_s=args.track_timeout)
    except KeyboardInterrupt:
        print("\ncadenza package: interrupted; finished tracks are kept", file=sys.stderr)
        return 130
    except OutputError as exc:
        print(f"cadenza package: {exc}", file=sys.stderr)
        return 1
    packaged = sum(r.status == "packaged" for r in summary.results)
    skipped = sum(r.status == "skipped" for r in summary.results)
    print(
        f"cadenza package: {packaged} packaged, {skipped} skipped, {summary.failed} failed "
        f"in {summary.wall_s:.1f} s; report: {args.out / 'batch-report.json'}",
        file=sys.stderr,
    )
    return summary.exit_status
