"""Package many tracks: in parallel worker processes (:mod:`cadenza.packager.processes`)
or on a Dask cluster (:mod:`cadenza.packager.cluster`), each failure isolated, progress
on the terminal down to the seconds decoded within each track
(:mod:`cadenza.packager.progress`), and this run's entry in ``batch-report.json``
(:mod:`cadenza.packager.report`, which keeps every earlier run) rewritten atomically
after every track, so even a killed batch leaves an accurate account.

Each track is one :class:`~cadenza.packager.work.TrackWork` call, which skips a track
whose fingerprint matches what the destination holds (:mod:`cadenza.packager.fingerprint`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from cadenza.packager.catalogue import TrackInput, as_inputs
from cadenza.packager.output import remove_stale_temp_dirs
from cadenza.packager.processes import run_processes
from cadenza.packager.progress import Progress, reporting_to
from cadenza.packager.report import RunReport
from cadenza.packager.track import PackageOptions, TrackResult, package_track
from cadenza.packager.work import Destination, LocalDestination, Package, TrackWork
from cadenza.store.s3client import S3Settings

__all__ = [
    "REPORT_NAME",
    "BatchSummary",
    "Destination",
    "LocalDestination",
    "Progress",
    "TrackWork",
    "default_jobs",
    "expand_inputs",
    "run_batch",
]

REPORT_NAME: Final = "batch-report.json"
MEDIA_SUFFIXES: Final = frozenset(
    [
        ".wav",
        ".flac",
        ".mp3",
        ".m4a",
        ".aac",
        ".mp4",
        ".ogg",
        ".oga",
        ".opus",
        ".aif",
        ".aiff",
        ".wma",
        ".mka",
        ".mkv",
        ".webm",
        ".mov",
        ".wv",
        ".ape",
    ]
)


@dataclass(frozen=True, slots=True)
class BatchSummary:
    results: tuple[TrackResult, ...]
    wall_s: float

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given; directories expand to the media files below them, sorted."""
    out: list[Path] = []
    for path in inputs:
        if path.is_dir():
            out.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES
                )
            )
        else:
            out.append(path)
    return out


def _duplicate_results(
    inputs: Sequence[TrackInput],
) -> tuple[list[TrackInput], list[TrackResult]]:
    seen: dict[str, TrackInput] = {}
    unique: list[TrackInput] = []
    rejected: list[TrackResult] = []
    for item in inputs:
        track_id = item.track_id
        if track_id in seen:
            rejected.append(
                TrackResult(
                    input=item.source,
                    track_id=track_id,
                    status="failed",
                    error=f"{item.source}: track id {track_id!r} is already used by "
                    f"{seen[track_id].source}; rename one of them",
                )
            )
        else:
            seen[track_id] = item
            unique.append(item)
    return unique, rejected


def run_batch(
    inputs: Sequence[Path | TrackInput],
    out_root: Path,
    options: PackageOptions,
    *,
    jobs: int,
    timeout_s: float | None = None,
    stream: TextIO | None = None,
    package: Package = package_track,
    destination: Destination | None = None,
    s3: S3Settings | None = None,
    cluster: str | None = None,
    report_path: Path | None = None,
    level: int = logging.INFO,
) -> BatchSummary:
    """Package every input; the output root must already be prepared.

    ``out_root`` is the output folder, or for a staged ``destination`` (S3) the
    local staging folder. Tracks whose fingerprint matches the destination's are
    skipped unless ``options.force``. With ``cluster`` (a Dask scheduler address) each track
    is a task on the cluster; otherwise, with ``timeout_s`` (or more than one job)
    every track runs in a child process with that time limit, and else here, one
    after another. This run's entry in the report goes to ``report_path`` (default:
    in ``out_root``); ``level`` (a ``logging`` level) says how much ``stream`` shows.
    """
    started = datetime.now(UTC)
    started_wall = time.perf_counter()
    destination = destination or LocalDestination(out_root)
    report = RunReport(report_path or out_root / REPORT_NAME, started)
    work = TrackWork(out_root, options, package, destination, s3 or S3Settings())
    items = as_inputs(inputs)
    remove_stale_temp_dirs(out_root)
    unique, results = _duplicate_results(items)
    # sys.stderr as it is now, not at import: pytest and embedders replace it.
    progress = Progress(len(items), stream or sys.stderr, level=level)
    for rejected in results:
        progress.update(rejected)

    def done(result: TrackResult) -> None:
        results.append(result)
        progress.update(result)
        report.write(results, done=False)

    # Whether a track is up to date is each track's own question (its source is hashed
    # into a fingerprint: packager.fingerprint), answered in parallel by the workers.
    todo = list(unique)
    report.write(results, done=False)
    if cluster is not None and todo:
        from cadenza.packager.cluster import run_on_cluster  # Dask is optional and slow to import

        run_on_cluster(cluster, todo, work, done)
    elif timeout_s is None and (jobs <= 1 or len(todo) <= 1):
        with reporting_to(progress.decoding):
            for item in todo:
                done(work(item))
    elif todo:
        run_processes(
            todo, out_root, work, min(jobs, len(todo)), timeout_s, done, progress.decoding
        )
    progress.finish()
    report.write(results, done=True)
    return BatchSummary(tuple(results), time.perf_counter() - started_wall)


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)
