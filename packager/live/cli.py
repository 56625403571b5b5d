"""``cadenza live INPUT --out DIR|s3://BUCKET/PREFIX``: package a live input as it
arrives (LL-HLS and LL-DASH files under ``DIR/<track_id>/``, or objects under
``PREFIX/<track_id>/``; ``cadenza serve DIR`` or ``cadenza serve s3://BUCKET/PREFIX``
serves them).

Exit status (the table of ``cadenza package``, :mod:`cadenza.packager.cli`): 0 when
the stream ended (the input ended, or ``--max-duration``), 1 when the input fails
(never starts, cannot be read), an encoder fails or S3 fails mid-stream (or cannot
keep up), 2 for a usage error (bad flags, an invalid ladder, an unusable ``--out``:
a folder that cannot be made, an S3 endpoint that cannot be reached or a bucket
that does not exist, checked before anything is encoded).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec
from cadenza.packager.args import positive_seconds, segment_duration
from cadenza.packager.cli import USAGE_ERROR, log_level
from cadenza.packager.errors import LadderError, OutputError, PackagerError, store_errors
from cadenza.packager.ladder import load_ladder
from cadenza.packager.live.grid import (
    DEFAULT_PART_DURATION,
    DEFAULT_SEGMENT_DURATION,
    DEFAULT_WINDOW_S,
)
from cadenza.packager.live.ingest import DEFAULT_START_TIMEOUT_S, LiveOptions, run_live
from cadenza.packager.live.sink_s3 import S3Output
from cadenza.packager.live.source import LiveInput, is_network
from cadenza.packager.output import track_id_for
from cadenza.store.s3client import S3Settings
from cadenza.store.s3url import is_s3_url, parse_s3_url
from cadenza.store.s3write import S3TrackWriter

FAILED = 1
LIVE_LADDER_NAME = "live"
# Small enough to run in real time with headroom on two cores (docs/packaging.md, Live).
LIVE_LADDER = Ladder(
    LIVE_LADDER_NAME,
    (
        Rung(Codec.AAC, 64_000),
        Rung(Codec.AAC, 128_000),
        Rung(Codec.OPUS, 96_000),
    ),
)


def _part_duration(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not Fraction(1, 10) <= value <= Fraction(2):
        raise argparse.ArgumentTypeError("must be between 0.1 and 2 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        metavar="INPUT",
        help="a file, or a URL FFmpeg reads live (http(s)/Icecast, srt://, rtmp:// "
        "where the FFmpeg build has them)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR|s3://BUCKET/PREFIX",
        help="writes DIR/<track_id>/, or uploads each part to s3://BUCKET/PREFIX/<track_id>/ "
        "(AWS_ENDPOINT_URL and the usual AWS credentials as for cadenza package)",
    )
    parser.add_argument(
        "--track-id", metavar="ID", help="the track's folder name (default: the input's stem)"
    )
    parser.add_argument(
        "--ladder",
        default=LIVE_LADDER_NAME,
        metavar="FILE|PRESET",
        help="AAC and Opus rungs, encoded at 48 kHz (default: live = AAC 64k, 128k, Opus 96k)",
    )
    parser.add_argument(
        "--part-duration",
        type=_part_duration,
        default=DEFAULT_PART_DURATION,
        metavar="S",
        help="CMAF chunk (LL-HLS part) duration, rounded to whole frames of every codec "
        f"(default: {float(DEFAULT_PART_DURATION)})",
    )
    parser.add_argument(
        "--segment-duration",
        type=segment_duration,
        default=DEFAULT_SEGMENT_DURATION,
        metavar="S",
        help="segment duration, rounded to whole parts (default: 2, i.e. 1.92 s)",
    )
    parser.add_argument(
        "--window",
        type=positive_seconds,
        default=DEFAULT_WINDOW_S,
        metavar="S",
        help=f"DVR window kept, seconds (default: {DEFAULT_WINDOW_S:g})",
    )
    parser.add_argument(
        "--realtime", action="store_true", help="pace a file at 1x wall clock (a demo source)"
    )
    parser.add_argument("--loop", action="store_true", help="restart a file at its end")
    parser.add_argument(
        "--max-duration",
        type=positive_seconds,
        metavar="S",
        help="stop after S seconds of media, and end the stream",
    )
    parser.add_argument(
        "--start-timeout",
        type=positive_seconds,
        default=DEFAULT_START_TIMEOUT_S,
        metavar="S",
        help=f"fail when no audio arrives within S seconds (default: {DEFAULT_START_TIMEOUT_S:g})",
    )
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    chatter.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _fail(message: object, status: int) -> int:
    print(f"cadenza live: {message}", file=sys.stderr)
    return status


def _ladder(spec: str) -> Ladder:
    return LIVE_LADDER if spec == LIVE_LADDER_NAME else load_ladder(spec)


def s3_output(text: str) -> S3Output:
    """``--out s3://…`` checked before anything is encoded: the bucket must answer,
    within two quick attempts (an unreachable endpoint or a missing bucket is a usage
    error, not a stream that fails later).  Raises a :class:`PackagerError`."""
    with store_errors():
        root = parse_s3_url(text, prefix=True)
        settings = S3Settings(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        quick = replace(settings, max_attempts=2, connect_timeout_s=3.0, read_timeout_s=10.0)
        S3TrackWriter(root, quick).check()
    return S3Output(root, settings)


def run(args: argparse.Namespace) -> int:
    log_level(args)
    out: Path | S3Output = Path(args.out)
    if is_s3_url(args.out):
        try:
            out = s3_output(args.out)
        except PackagerError as exc:
            return _fail(f"--out: {exc}", USAGE_ERROR)
    try:
        ladder = _ladder(args.ladder)
    except LadderError as exc:
        return _fail(exc, USAGE_ERROR)
    name: str = args.input
    # exists(), not is_file(): a named pipe (FIFO) is a live input FFmpeg reads too
    if not is_network(name) and not Path(name).exists():
        return _fail(f"{name}: no such file", FAILED)
    track_id = args.track_id or track_id_for(Path(name.rstrip("/").rsplit("/", 1)[-1] or "live"))
    options = LiveOptions(
        ladder=ladder,
        part_duration=args.part_duration,
        segment_duration=args.segment_duration,
        window_s=args.window,
        max_duration_s=args.max_duration,
        start_timeout_s=args.start_timeout,
        detect_stalls=args.realtime or is_network(name),
    )
    source = LiveInput(name, realtime=args.realtime, loop=args.loop)
    warnings: list[str] = []  # the ladder fitted to the input (rungs skipped or lowered)
    signal.signal(signal.SIGTERM, _interrupt)  # a stop ends the stream (ENDLIST)
    try:
        final = run_live(
            source,
            out,
            track_id,
            options,
            clock=time.time,
            name=name,
            warnings=warnings,
        )
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (LadderError, OutputError) as exc:
        return _fail(exc, USAGE_ERROR)
    except PackagerError as exc:
        return _fail(exc, FAILED)
    for warning in warnings:
        print(f"cadenza live: warning: {warning}", file=sys.stderr)
    segments = final.renditions[0].segments if final.renditions else ()
    print(
        f"cadenza live: {track_id}: ended after {len(segments)} segments in the window",
        file=sys.stderr,
    )
    return 0
