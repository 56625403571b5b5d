"""Package many tracks: in parallel worker processes (:mod:`cadenza.packager.processes`)
or on a Dask cluster (:mod:`cadenza.packager.cluster`), each failure isolated, progress
on the terminal, and ``batch-report.json`` rewritten atomically after every track so
even a killed batch leaves an accurate account.

Each track is one :class:`~cadenza.packager.work.TrackWork` call; tracks already
complete at the destination (:mod:`cadenza.store.complete`) are skipped first.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from cadenza.packager.catalogue import TrackInput, as_inputs
from cadenza.packager.output import remove_stale_temp_dirs, write_json_atomic
from cadenza.packager.processes import run_processes
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


class Progress:
    """A one-line bar on a TTY; one plain line per track otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()

    def update(self, result: TrackResult) -> None:
        self.done += 1
        detail = {
            "packaged": f"-> {result.output} ({result.wall_s:.1f} s)",
            "skipped": "already complete, skipped",
            "failed": f"FAILED: {result.error}",
        }[result.status]
        line = f"[{self.done}/{self.total}] {result.status} {result.input} {detail}"
        for warning in result.warnings:
            line += f"\n    warning: {warning}"
        if self.tty:
            width = 30
            filled = width * self.done // max(1, self.total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r\033[K{line}\n[{bar}] {self.done}/{self.total}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


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


def _report(path: Path, started: datetime, results: list[TrackResult], done: bool) -> None:
    counts = {s: sum(r.status == s for r in results) for s in ("packaged", "skipped", "failed")}
    write_json_atomic(
        path,
        {
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds") if done else None,
            "complete": done,
            "summary": counts,
            "tracks": [r.to_dict() for r in results],
        },
    )


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
) -> BatchSummary:
    """Package every input; the output root must already be prepared.

    ``out_root`` is the output folder, or for a staged ``destination`` (S3) the
    local staging folder. Tracks already complete at the destination are skipped
    unless ``options.force``. With ``cluster`` (a Dask scheduler address) each track
    is a task on the cluster; otherwise, with ``timeout_s`` (or more than one job)
    every track runs in a child process with that time limit, and else here, one
    after another. The report goes to ``report_path`` (default: in ``out_root``).
    """
    started = datetime.now(UTC)
    started_wall = time.perf_counter()
    destination = destination or LocalDestination(out_root)
    report = report_path or out_root / REPORT_NAME
    work = TrackWork(out_root, options, package, destination, s3 or S3Settings())
    items = as_inputs(inputs)
    remove_stale_temp_dirs(out_root)
    unique, results = _duplicate_results(items)
    # sys.stderr as it is now, not at import: pytest and embedders replace it.
    progress = Progress(len(items), stream or sys.stderr)
    for rejected in results:
        progress.update(rejected)

    def done(result: TrackResult) -> None:
        results.append(result)
        progress.update(result)
        _report(report, started, results, done=False)

    complete = set() if options.force else destination.complete([i.track_id for i in unique])
    todo = []
    for item in unique:
        if item.track_id in complete:  # reported together below, not once per track
            location = destination.location(item.track_id)
            results.append(TrackResult(item.source, item.track_id, "skipped", output=location))
            progress.update(results[-1])
        else:
            todo.append(item)
    _report(report, started, results, done=False)
    if cluster is not None and todo:
        from cadenza.packager.cluster import run_on_cluster  # Dask is optional and slow to import

        run_on_cluster(cluster, todo, work, done)
    elif timeout_s is None and (jobs <= 1 or len(todo) <= 1):
        for item in todo:
            done(work(item))
    elif todo:
        run_processes(todo, out_root, work, min(jobs, len(todo)), timeout_s, done)
    _report(report, started, results, done=True)
    return BatchSummary(tuple(results), time.perf_counter() - started_wall)


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)
