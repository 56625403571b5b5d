"""S3 for the packager: ``s3://`` inputs downloaded, finished tracks uploaded.

A track is packaged into a local staging folder first (the same atomic local path as
``--out DIR``), then handed to the track store's S3 write face, which uploads it in
the order that keeps readers safe, ``presentation.json`` last
(:mod:`cadenza.store.s3upload`), with the client, retries and timeouts of
:mod:`cadenza.store.s3client`.  The store's errors are mapped here, at the packager's
edge, to :class:`~cadenza.packager.errors.StorageError` (S3),
:class:`~cadenza.packager.errors.OutputError` (a local file) and
:class:`~cadenza.packager.errors.InputError` (a source that is not there).

aioboto3 is imported only inside the store's functions that talk to S3: packaging to
a local folder never loads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

from cadenza.packager.errors import InputError, OutputError, store_errors
from cadenza.packager.fingerprint import Previous, current_names, read_presentation
from cadenza.store.atomic import oserror_reason
from cadenza.store.errors import RequestFailedError
from cadenza.store.s3client import S3Settings
from cadenza.store.s3sweep import S3Sweeper
from cadenza.store.s3url import S3Url, parse_s3_url
from cadenza.store.s3write import S3TrackWriter, download

REPORT_FOLDER = ".cadenza"  # hidden: the origin never lists or serves it


def fetch(url: str, folder: Path, settings: S3Settings) -> Path:
    """Download ``s3://…`` into ``folder`` under the object's own file name."""
    with store_errors():
        parsed = parse_s3_url(url, prefix=False)
        dest = folder / (PurePosixPath(parsed.key).name or "source")
        try:
            asyncio.run(download(parsed, dest, settings))
        except RequestFailedError as exc:
            if exc.not_found:
                raise InputError(exc.url, exc.reason) from None
            raise
    return dest


@dataclass(frozen=True, slots=True)
class S3Destination:
    """Tracks go to ``root/<track_id>/``, staged locally first (see the module docstring).
    Picklable: it travels to forked children and Dask workers."""

    root: S3Url
    settings: S3Settings = field(default_factory=S3Settings)
    staged: ClassVar[bool] = True

    @property
    def _writer(self) -> S3TrackWriter:
        return S3TrackWriter(self.root, self.settings)

    def location(self, track_id: str) -> str:
        return self._writer.location(track_id)

    def complete(self, track_ids: Sequence[str]) -> set[str]:
        with store_errors():
            return self._writer.complete(track_ids)

    def previous(self, track_id: str) -> Previous:
        """What the prefix holds for the track: its presentation and file names. A
        complete track is not listed (one GET, however many segments it has): the
        names its presentation gives are the ones a new tag must not clash with."""
        sweeper = S3Sweeper(self.root, self.settings)
        with store_errors():
            presentation = read_presentation(sweeper.presentation(track_id))
            if presentation is not None:
                return Previous(presentation, frozenset(current_names(presentation)))
            return Previous(None, frozenset(sweeper.files(track_id)))

    def publish(self, folder: Path, track_id: str) -> int:
        with store_errors():
            return self._writer.put_track(folder, track_id)

    def check(self) -> None:
        with store_errors():
            self._writer.check()

    def put_report(self, path: Path, name: str) -> str:
        """Upload the batch report under the prefix's hidden ``.cadenza/`` folder (which
        the origin never serves); returns its URL."""
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise OutputError(path, f"cannot read: {oserror_reason(exc)}") from exc
        with store_errors():
            return self._writer.put_object(f"{REPORT_FOLDER}/{name}", body, "application/json")
