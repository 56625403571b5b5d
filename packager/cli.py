"""``cadenza package INPUT... --out DIR|s3://BUCKET/PREFIX``: the batch packaging command.

Inputs come from the command line (files, folders, ``s3://`` objects) and from
``--catalogue`` files (:mod:`cadenza.packager.catalogue`); ``--shard I/N`` keeps this
run's share of them. Tracks go to a local folder, or to S3 through a local
staging folder (:mod:`cadenza.packager.s3`); ``--cluster`` runs them on Dask
(:mod:`cadenza.packager.cluster`).

Exit status: 0 when every track is packaged or already complete, 1 when any
track fails (the others still complete) or S3 or the cluster fails mid-batch,
2 for a usage error (bad flags, an invalid ladder, catalogue or ``--config`` file, an
unusable ``--out``).

``--config FILE.toml`` (:mod:`cadenza.packager.config`) describes the inputs, ladder,
output and options in one file; flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from cadenza.manifests.ladder import DEFAULT_PRESET, PRESETS, Ladder
from cadenza.packager.args import positive_seconds, segment_duration
from cadenza.packager.batch import REPORT_NAME, default_jobs, expand_inputs, run_batch
from cadenza.packager.catalogue import (
    TrackInput,
    parse_shard,
    read_catalogue,
    select_shard,
    source_input,
)
from cadenza.packager.config import CONFIG_CATALOGUES, CONFIG_INPUTS
from cadenza.packager.config import apply_config_defaults as apply_config_defaults
from cadenza.packager.errors import CatalogueError, InputError, LadderError, PackagerError
from cadenza.packager.keys import add_encryption_arguments, encryption_options
from cadenza.packager.ladder import load_ladder
from cadenza.packager.output import prepare_output_root
from cadenza.packager.report import adopt_runs
from cadenza.packager.s3 import REPORT_FOLDER, S3Destination, fetch
from cadenza.packager.track import DEFAULT_SEGMENT_DURATION, PackageOptions
from cadenza.store.s3client import S3Settings
from cadenza.store.s3url import is_s3_url, parse_s3_url

USAGE_ERROR = 2
DEFAULT_TRACK_TIMEOUT_S = 3600.0
DEFAULT_STAGING = Path(tempfile.gettempdir()) / "cadenza-staging"


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cluster(text: str) -> str:
    if "://" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a scheduler address like tcp://HOST:8786"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(**{CONFIG_INPUTS: [], CONFIG_CATALOGUES: []})
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="read inputs, ladder, output and options from this file; flags given here "
        "override it (see examples/package.toml)",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="audio or video files FFmpeg can read, folders of them, or s3://BUCKET/KEY objects",
    )
    parser.add_argument(
        "--catalogue",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a list of inputs: text, one path or s3:// URL a line; or .csv with the "
        "columns track_id,source (repeatable)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="where each track goes: DIR/<track_id>/, or s3://BUCKET/PREFIX/<track_id>/ "
        "(staged locally, then uploaded, manifests last); required, here or in --config",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="package only shard I of N (0 <= I < N), chosen by a stable hash of the track id",
    )
    parser.add_argument(
        "--cluster",
        type=_cluster,
        metavar="tcp://HOST:PORT",
        help="run one task per track on this Dask scheduler (needs the 'cluster' extra)",
    )
    parser.add_argument(
        "--staging",
        type=Path,
        default=DEFAULT_STAGING,
        metavar="DIR",
        help="with s3:// output: where tracks are built before upload, and the batch report "
        f"is kept (default: {DEFAULT_STAGING})",
    )
    parser.add_argument(
        "--ladder",
        default=DEFAULT_PRESET,
        metavar="FILE|PRESET",
        help=f"ladder preset ({', '.join(PRESETS)}) or .toml/.json file "
        f"(default: {DEFAULT_PRESET})",
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
        type=positive_seconds,
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
        "--force",
        action="store_true",
        help="repackage tracks even when up to date, and replace a track id packaged from "
        "another file (each republish gets new, version-tagged file names)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail a track whose input is damaged (decodes shorter than its header's "
        "duration, or has undecodable packets) instead of packaging it with a warning",
    )
    add_encryption_arguments(parser)
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="more detail: each track's CPU time and audio length, and debug logging",
    )
    chatter.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show only failures, warnings and the closing summary (no progress)",
    )


def gather_inputs(args: argparse.Namespace) -> list[TrackInput]:
    """Command-line inputs (folders expanded), then each catalogue's, in order; the
    ``--config`` file's when the command line names none."""
    texts: list[str] = args.inputs
    catalogues: list[Path] = args.catalogue
    where = "the command line"
    if not texts and not catalogues:
        texts, catalogues = args.config_inputs, args.config_catalogues
        where = str(args.config)
    inputs: list[TrackInput] = []
    for text in texts:
        if is_s3_url(text):
            try:
                inputs.append(source_input(text))
            except ValueError as exc:
                raise CatalogueError(where, [(0, str(exc))]) from None
        else:
            inputs += [TrackInput.from_path(p) for p in expand_inputs([Path(text)])]
    for catalogue in catalogues:
        inputs += read_catalogue(catalogue)
    return inputs


def adopt_uploaded_report(out: str, report: Path, s3: S3Settings) -> None:
    """Merge the report a previous run uploaded to ``OUT/.cadenza/`` into the staged one,
    so the upload at the end keeps every earlier run (a warning if it cannot be read)."""
    url = f"{out.rstrip('/')}/{REPORT_FOLDER}/{report.name}"
    with tempfile.TemporaryDirectory(prefix="cadenza-report-") as scratch:
        try:
            adopt_runs(report, fetch(url, Path(scratch), s3))
        except InputError:
            pass  # no earlier run uploaded one
        except (PackagerError, ValueError) as exc:  # ValueError: not JSON
            print(
                f"cadenza package: warning: earlier runs' report not read: {exc}", file=sys.stderr
            )


def _fail(message: object, status: int) -> int:
    print(f"cadenza package: {message}", file=sys.stderr)
    return status


def log_level(args: argparse.Namespace) -> int:
    """``-q`` -> WARNING, ``-v`` -> DEBUG, else INFO; also set on the ``cadenza`` logger."""
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(format="%(name)s: %(levelname)s: %(message)s")
    logging.getLogger("cadenza").setLevel(level)
    return level


def run(args: argparse.Namespace) -> int:
    if args.verbose and args.quiet:  # one from --config: the parser checks only flags
        return _fail("-v/verbose and -q/quiet together (one of them from --config)", USAGE_ERROR)
    level = log_level(args)
    try:
        ladder = args.ladder if isinstance(args.ladder, Ladder) else load_ladder(args.ladder)
    except LadderError as exc:
        return _fail(exc, USAGE_ERROR)
    if not (args.inputs or args.catalogue or args.config_inputs or args.config_catalogues):
        return _fail(
            "give INPUT files or folders, or --catalogue FILE (here or in --config)", USAGE_ERROR
        )
    if args.out is None:
        return _fail("give --out DIR|s3://BUCKET/PREFIX (here or in --config)", USAGE_ERROR)
    try:
        inputs = gather_inputs(args)
    except CatalogueError as exc:
        return _fail(exc, USAGE_ERROR)
    if not inputs:
        return _fail("no media files found in the given folders or catalogues", USAGE_ERROR)
    s3 = S3Settings(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    destination: S3Destination | None = None
    if is_s3_url(args.out):
        try:
            destination = S3Destination(parse_s3_url(args.out, prefix=True), s3)
        except ValueError as exc:
            return _fail(f"--out: {exc}", USAGE_ERROR)
        out_root: Path = args.staging
    else:
        out_root = Path(args.out)
    try:
        prepare_output_root(out_root)
        if destination is not None:
            destination.check()
    except PackagerError as exc:
        return _fail(exc, USAGE_ERROR)
    try:
        encryption = encryption_options(args, os.environ, s3)
    except PackagerError as exc:
        return _fail(exc, USAGE_ERROR)
    if encryption is not None and args.cluster:
        # The key-encryption key never travels over the cluster's connections: each
        # Dask worker reads its own CADENZA_KEY_ENCRYPTION_KEY (docs/packaging.md).
        encryption = replace(encryption, kek=None)
    options = PackageOptions(
        ladder=ladder,
        segment_duration=args.segment_duration,
        single_file=args.single_file,
        force=args.force,
        strict=args.strict,
        encryption=encryption,
    )
    report_name = REPORT_NAME
    if args.shard is not None:
        index, count = args.shard
        inputs = select_shard(inputs, index, count)
        report_name = f"batch-report-shard-{index}-of-{count}.json"
        if level <= logging.INFO:
            print(f"cadenza package: shard {index}/{count}: {len(inputs)} tracks", file=sys.stderr)
    report = out_root / report_name
    if destination is not None:
        adopt_uploaded_report(args.out, report, s3)
    try:
        summary = run_batch(
            inputs,
            out_root,
            options,
            jobs=args.jobs,
            timeout_s=args.track_timeout,
            destination=destination,
            s3=s3,
            cluster=args.cluster,
            report_path=report,
            level=level,
        )
    except KeyboardInterrupt:
        print("\ncadenza package: interrupted; finished tracks are kept", file=sys.stderr)
        return 130
    except PackagerError as exc:
        return _fail(exc, 1)
    where = str(report)
    if destination is not None:
        try:
            where += f" and {destination.put_report(report, report_name)}"
        except PackagerError as exc:
            print(f"cadenza package: warning: report not uploaded: {exc}", file=sys.stderr)
    packaged = sum(r.status == "packaged" for r in summary.results)
    skipped = sum(r.status == "skipped" for r in summary.results)
    print(
        f"cadenza package: {packaged} packaged, {skipped} skipped, {summary.failed} failed "
        f"in {summary.wall_s:.1f} s; report: {where}",
        file=sys.stderr,
    )
    return summary.exit_status
