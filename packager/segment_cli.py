"""``cadenza segment RUNG_FILE... --track-id ID --out DIR``: segment pre-encoded rungs.

Each RUNG_FILE is one rung of the ladder, already encoded (AAC-LC in MP4/M4A or
ADTS, Opus in Ogg or MP4, FLAC native or in MP4); they are cut into CMAF
segments with HLS and DASH manifests, like ``cadenza package`` output, without
decoding or re-encoding.

A track already segmented from the same files with the same options is skipped;
otherwise (changed files or options, or ``--force``) it is segmented again under
fresh version-tagged file names, as ``cadenza package`` republishes
(:mod:`cadenza.packager.fingerprint`). Another set of files under the same track
id is an error unless ``--force``.

Exit status: 0 when the track is written (or already up to date), 1 when an
input or the output fails (or the track id is taken by other files), 2 for a
usage error (bad flags or track id, an unusable ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from cadenza.packager.args import segment_duration
from cadenza.packager.catalogue import track_id_problem
from cadenza.packager.errors import OutputError, PackagerError
from cadenza.packager.output import prepare_output_root
from cadenza.packager.remux import RemuxOptions, remux_track
from cadenza.packager.segmenter import DEFAULT_SEGMENT_DURATION

USAGE_ERROR: Final = 2


def _track_id(text: str) -> str:
    if problem := track_id_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="RUNG_FILE",
        help="one encoded file per rung, in ladder order: AAC-LC (.m4a/.mp4/.aac), "
        "Opus (.ogg/.opus/.mp4) or FLAC (.flac/.mp4)",
    )
    parser.add_argument(
        "--track-id",
        required=True,
        type=_track_id,
        metavar="ID",
        help="the track's folder name under --out",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder; writes DIR/ID/"
    )
    parser.add_argument(
        "--segment-duration",
        type=segment_duration,
        default=DEFAULT_SEGMENT_DURATION,
        metavar="S",
        help="target segment duration in seconds, rounded to whole codec frames (default: 4)",
    )
    parser.add_argument(
        "--single-file",
        action="store_true",
        help="one file per rendition with byte ranges (HLS BYTERANGE, DASH on-demand SegmentBase)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="segment again when the track is already up to date, or replace a track "
        "made from other files (under new file names)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        prepare_output_root(args.out)
    except OutputError as exc:
        print(f"cadenza segment: {exc}", file=sys.stderr)
        return USAGE_ERROR
    options = RemuxOptions(
        segment_duration=args.segment_duration, single_file=args.single_file, force=args.force
    )
    try:
        result = remux_track(args.track_id, args.inputs, args.out, options)
    except PackagerError as exc:
        print(f"cadenza segment: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncadenza segment: interrupted; nothing was written", file=sys.stderr)
        return 130
    if result.status == "skipped":
        print(
            f"cadenza segment: {result.output} is already complete, {result.reason} "
            "(--force redoes it)",
            file=sys.stderr,
        )
    else:
        assert result.presentation is not None
        ids = ", ".join(r.id for r in result.presentation.renditions)
        why = f" ({result.reason})" if result.reason else ""
        print(
            f"cadenza segment: {result.output}: {ids} in {result.wall_s:.2f} s{why}",
            file=sys.stderr,
        )
    return 0
