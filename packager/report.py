"""``batch-report.json``: what every batch run into an output folder did, run by run.

The file keeps the history of runs. Its top level is the most recent run, laid out as
the single-run reports of earlier versions were (``run_id``, ``started``,
``finished``, ``complete``, ``summary``, ``tracks``), so a reader that wants only the
latest run reads it as before; ``previous_runs`` holds every earlier run, oldest
first, one entry per run id::

    {"format": 2, "run_id": "20261206T204700Z-3f9c1a2b", "started": ..., "finished": ...,
     "complete": true, "cadenza_version": "0.1.0", "summary": {...}, "tracks": [...],
     "previous_runs": [{"run_id": ..., ...}, ...]}

A running batch rewrites its own entry after every track (:class:`RunReport`). Each
rewrite reads the file, merges this run in by run id (a new run goes last, so the
latest run is the one that started last), and replaces the file atomically
(a temporary file renamed over it) while holding an exclusive lock on the folder, so
two batches writing the same report at once both keep their runs, and a batch that is
killed leaves its run marked ``"complete": false``. A report in the single-run format
is converted on read: it becomes one run, its id made from its start time. A report
that is not JSON is set aside as ``batch-report.json.unreadable-<time>``, not
overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cadenza.packager.fingerprint import cadenza_version
from cadenza.packager.output import write_json_atomic
from cadenza.packager.track import TrackResult

FORMAT: Final = 2
STATUSES: Final = ("packaged", "skipped", "failed")

Run = dict[str, Any]


def new_run_id(started: datetime) -> str:
    """Sorts by start time; the random suffix keeps runs started in the same second apart."""
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself: no lock file appears beside the report."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _runs_of(data: object) -> list[Run]:
    """Every run in a parsed report, whichever format it is in."""
    if not isinstance(data, dict):
        return []
    previous = data.get("previous_runs", [])
    runs: list[Run] = [r for r in previous if isinstance(r, dict) and "run_id" in r]
    latest = {k: v for k, v in data.items() if k not in ("format", "previous_runs")}
    if "tracks" in latest or "summary" in latest:
        if "run_id" not in latest:  # a single-run report from before run ids
            started = str(latest.get("started") or "unknown")
            latest = {"run_id": f"{started}-single", **latest}
        runs.append(latest)
    return runs


def read_runs(path: Path) -> list[Run]:
    """Every run the report at ``path`` records, oldest first; [] when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return _runs_of(json.loads(text))


def _read_for_merge(path: Path) -> list[Run]:
    try:
        return read_runs(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path.rename(path.with_name(f"{path.name}.unreadable-{stamp}"))
        return []


def write_runs(path: Path, runs: Sequence[Run]) -> None:
    """Write ``runs`` (oldest first) as a report: the last at the top, the rest before it."""
    *previous, latest = runs
    write_json_atomic(path, {"format": FORMAT, **latest, "previous_runs": previous})


def adopt_runs(path: Path, source: Path) -> int:
    """Take into the report at ``path`` the runs of the report file ``source`` that it
    lacks (put before its own: they are the earlier ones); returns how many were taken.

    With ``--out s3://…`` the report lives in the staging folder and is uploaded when the
    batch ends; the uploaded one is adopted first, so a fresh staging folder (a new pod)
    does not overwrite the history of the runs before it.
    """
    theirs = read_runs(source)
    with _folder_lock(path.parent):
        ours = _read_for_merge(path)
        known = {r["run_id"] for r in ours}
        taken = [r for r in theirs if r["run_id"] not in known]
        if taken:
            write_runs(path, [*taken, *ours])
    return len(taken)


class RunReport:
    """This run's entry in the report at ``path``, merged in after every change."""

    def __init__(self, path: Path, started: datetime) -> None:
        self.path = path
        self.started = started
        self.run_id = new_run_id(started)

    def entry(self, results: Sequence[TrackResult], done: bool) -> Run:
        return {
            "run_id": self.run_id,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds") if done else None,
            "complete": done,
            "cadenza_version": cadenza_version(),
            "summary": {s: sum(r.status == s for r in results) for s in STATUSES},
            "tracks": [r.to_dict() for r in results],
        }

    def write(self, results: Sequence[TrackResult], done: bool) -> None:
        """Merge this run's entry, as it now is, into the report on disk: in its place
        if the report has it, else after every run there (a run keeps the place its first
        write gave it, so the runs stay in the order they started)."""
        entry = self.entry(results, done)
        with _folder_lock(self.path.parent):
            runs = _read_for_merge(self.path)
            ids = [r["run_id"] for r in runs]
            if self.run_id in ids:
                runs[ids.index(self.run_id)] = entry
            else:
                runs.append(entry)
            write_runs(self.path, runs)
