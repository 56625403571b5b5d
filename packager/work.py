"""One track of a batch, start to finish, wherever it runs (here, in a forked child,
or as a task on a Dask worker): fetch an ``s3://`` source into a scratch folder, hash
it into the track's fingerprint and decide whether it needs packaging
(:mod:`cadenza.packager.fingerprint`), package it, and for a staged destination (S3)
hand the finished track folder to the track store's write face
(:mod:`cadenza.packager.s3`), then clear the scratch.

For a local destination the decision is :func:`~cadenza.packager.track.package_track`'s,
against the track folder; for a staged one it is made here, against what the
destination holds, since the scratch folder holds nothing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Protocol

from cadenza.packager.catalogue import TrackInput
from cadenza.packager.errors import OutputError, PackagerError
from cadenza.packager.fingerprint import (
    Decision,
    Previous,
    Verdict,
    decide,
    encryption_options,
    fingerprint_source,
    local_previous,
)
from cadenza.packager.output import (
    is_complete,
    new_temp_dir,
    oserror_reason,
    remove_stale_temp_dirs,
)
from cadenza.packager.s3 import fetch
from cadenza.packager.track import PackageOptions, TrackResult, package_track
from cadenza.store.s3client import S3Settings
from cadenza.store.s3url import is_s3_url

Package = Callable[[Path, Path, PackageOptions], TrackResult]


class Destination(Protocol):
    """Where finished tracks go. ``staged`` destinations get each track packaged into a
    scratch folder first and handed to :meth:`publish`."""

    staged: ClassVar[bool]

    def location(self, track_id: str) -> str: ...

    def complete(self, track_ids: Sequence[str]) -> set[str]: ...

    def previous(self, track_id: str) -> Previous: ...

    def publish(self, folder: Path, track_id: str) -> int: ...


@dataclass(frozen=True, slots=True)
class LocalDestination:
    """``--out DIR``: tracks are packaged straight into ``DIR/<track_id>/``."""

    root: Path
    staged: ClassVar[bool] = False

    def location(self, track_id: str) -> str:
        return str(self.root / track_id)

    def complete(self, track_ids: Sequence[str]) -> set[str]:
        return {t for t in track_ids if is_complete(self.root / t)}

    def previous(self, track_id: str) -> Previous:
        return local_previous(self.root / track_id)

    def publish(self, folder: Path, track_id: str) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class TrackWork:
    """One track, start to finish; picklable, so it runs in a forked child or as a
    task on a Dask worker alike. ``out_root`` is the output folder for a local
    destination, the staging folder for a staged one."""

    out_root: Path
    options: PackageOptions
    package: Package = package_track
    destination: Destination | None = None
    s3: S3Settings = field(default_factory=S3Settings)

    def __call__(self, item: TrackInput) -> TrackResult:
        started = time.perf_counter()
        destination = self.destination or LocalDestination(self.out_root)
        staged = destination.staged
        scratch: Path | None = None
        local = Path(item.source)
        try:
            if staged or is_s3_url(item.source):
                self.out_root.mkdir(parents=True, exist_ok=True)
                if staged:  # a worker that died mid-track left its scratch folder here
                    remove_stale_temp_dirs(self.out_root)
                scratch = new_temp_dir(self.out_root, item.track_id)
            if is_s3_url(item.source):
                assert scratch is not None
                local = fetch(item.source, scratch, self.s3)
            options = self.options
            fingerprint = fingerprint_source(
                local,
                item.source,
                ladder=options.ladder,
                segment_duration=options.segment_duration,
                single_file=options.single_file,
                extra_options=encryption_options(options),
            )
            options = replace(options, track_id=item.track_id, fingerprint=fingerprint)
            decision: Decision | None = None
            if staged:
                decision = decide(
                    fingerprint, destination.previous(item.track_id), force=options.force
                )
                if decision.verdict in (Verdict.SKIP, Verdict.COLLISION):
                    return self._undone(item, decision, destination, started)
                options = replace(options, force=True, name_tag=decision.name_tag)
            result = self.package(local, scratch if staged and scratch else self.out_root, options)
            result.input = item.source
            if decision is not None:
                result.reason = decision.reason
            if result.error and str(local) != item.source:
                result.error = result.error.replace(str(local), item.source)
            if staged and result.status == "packaged" and scratch is not None:
                try:
                    destination.publish(scratch / item.track_id, item.track_id)
                    result.output = destination.location(item.track_id)
                except PackagerError as exc:
                    result.status = "failed"
                    result.output = None
                    result.error = f"{item.source}: {exc}"
        except PackagerError as exc:
            text = str(exc)
            error = text if item.source in text else f"{item.source}: {text}"
            result = failed_result(item, error, 0.0)
        except OSError as exc:  # the scratch folder itself: as package_track maps it
            reason = str(OutputError(exc.filename or self.out_root, oserror_reason(exc)))
            result = failed_result(item, f"{item.source}: {reason}", 0.0)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        result.wall_s = time.perf_counter() - started
        return result

    @staticmethod
    def _undone(
        item: TrackInput, decision: Decision, destination: Destination, started: float
    ) -> TrackResult:
        """The result of a track skipped, or refused as a track id collision."""
        wall_s = time.perf_counter() - started
        if decision.verdict is Verdict.COLLISION:
            error = f"{item.source}: {decision.collision_error(item.track_id)}"
            result = failed_result(item, error, wall_s)
        else:
            location = destination.location(item.track_id)
            result = TrackResult(item.source, item.track_id, "skipped", output=location)
            result.wall_s = wall_s
        result.reason = decision.reason
        return result


def failed_result(item: TrackInput, error: str, wall_s: float) -> TrackResult:
    return TrackResult(
        input=item.source, track_id=item.track_id, status="failed", error=error, wall_s=wall_s
    )
