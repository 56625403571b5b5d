"""A just-in-time track's current plan: its source, fingerprint, lineage entry, model and
manifests, made once per version of the source and kept.

Every lookup checks the source with one ``stat`` (size and mtime in ns; the ETag for an
``s3://`` source): unchanged, the kept plan answers.  Changed, the source is hashed
again (:func:`cadenza.packager.fingerprint.fingerprint_source`); a new fingerprint is a
new build with its own version tag (:mod:`.writeback`), so the derived objects change
with it and the old URLs keep their meaning.

A source that cannot be probed or planned (corrupt, truncated, no audio) is
remembered, with its error, for ``negative_ttl_s`` as long as it does not change:
requests within that time get the error again without another probe.

Blocking: run by the build pool (:mod:`.builder`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Final

from cadenza.manifests.fingerprint import Fingerprint
from cadenza.manifests.ladder import Ladder
from cadenza.manifests.model import Presentation
from cadenza.packager.errors import PackagerError
from cadenza.packager.fingerprint import fingerprint_source
from cadenza.packager.jit.cut import build_init, build_segment
from cadenza.packager.jit.events import JitEvents
from cadenza.packager.jit.plan import JitSource, plan_presentation, probe_source, track_files
from cadenza.packager.jit.sources import SourceError, SourceFile, Sources
from cadenza.packager.jit.writeback import LineageEntry, WriteBack, build_key
from cadenza.store.errors import SourceUnusableError, StoreUnavailableError

log = logging.getLogger("cadenza.packager.jit")

# A rendition file's name: what it is, its number, its version tag.
_MEDIA_NAME: Final = re.compile(
    r"(?P<kind>init|seg-(?P<number>[0-9]+)|media|playlist)(?:-(?P<tag>[0-9A-Za-z]{1,32}))?"
    r"\.(?:mp4|m4s|m3u8)"
)


def name_tag_of(name: str) -> str | None:
    """The version tag of a rendition file's name (``""``: untagged); None for a name
    that is no rendition file."""
    match = _MEDIA_NAME.fullmatch(name)
    if match is None:
        return None
    return match.group("tag") or ""


@dataclass(frozen=True, slots=True)
class MediaRef:
    rendition_id: str
    number: int | None  # None: the init segment


@dataclass(frozen=True, slots=True)
class TrackPlan:
    track_id: str
    source_file: SourceFile
    source: JitSource
    fingerprint: Fingerprint
    entry: LineageEntry
    presentation: Presentation
    files: dict[str, bytes]  # manifests and presentation.json, by name below the track
    media: dict[str, MediaRef]  # init and media segments, by name below the track
    mtime_s: float  # the source's: every object's Last-Modified
    warnings: tuple[str, ...]

    @property
    def build(self) -> str:
        return self.entry.build

    def build_object(self, name: str) -> bytes:
        """Encode the init or media segment at ``name`` (blocking, CPU)."""
        ref = self.media[name]
        try:
            if ref.number is None:
                return build_init(self.source, self.presentation, ref.rendition_id)
            return build_segment(self.source, self.presentation, ref.rendition_id, ref.number)
        except PackagerError as exc:
            raise SourceUnusableError(
                f"{self.track_id}/{name}", self.source_file.name, _reason(exc)
            ) from exc


def _reason(exc: PackagerError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)


def media_refs(presentation: Presentation) -> dict[str, MediaRef]:
    refs = {}
    for rendition in presentation.renditions:
        refs[f"{rendition.id}/{rendition.init_name}"] = MediaRef(rendition.id, None)
        for segment in rendition.segments:
            name = f"{rendition.id}/{rendition.segment_name(segment)}"
            refs[name] = MediaRef(rendition.id, segment.number)
    return refs


@dataclass(frozen=True, slots=True)
class _Failure:
    version: tuple[int, int] | str
    error: SourceUnusableError
    until_s: float


class Planner:
    def __init__(
        self,
        sources: Sources,
        writeback: WriteBack,
        *,
        ladder: Ladder,
        segment_duration: Fraction,
        negative_ttl_s: float,
        events: JitEvents,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = sources
        self.writeback = writeback
        self.ladder = ladder
        self.segment_duration = segment_duration
        self.negative_ttl_s = negative_ttl_s
        self._events = events
        self._clock = clock
        self._plans: dict[str, TrackPlan] = {}
        self._fingerprints: dict[str, tuple[tuple[int, int] | str, Fingerprint]] = {}
        self._failures: dict[str, _Failure] = {}
        self._lock = threading.Lock()
        self.probes = 0  # sources probed (tests: the negative cache)

    def known(self, track_id: str) -> TrackPlan | None:
        """The plan kept for ``track_id``, without checking its source."""
        return self._plans.get(track_id)

    def locate(self, track_id: str) -> SourceFile | None:
        """The source ``track_id`` names now (None: none); a folder or bucket that cannot
        be listed or read is :class:`StoreUnavailableError` (``503``: try again)."""
        try:
            return self.sources.locate(track_id)
        except SourceError as exc:
            log.error("JIT sources unavailable: %s", exc)
            raise StoreUnavailableError("jit", "the sources cannot be read") from exc

    def current(self, track_id: str, taken: frozenset[str] = frozenset()) -> TrackPlan | None:
        """The plan of the source ``track_id`` names now; None when there is no such
        source.  Raises :class:`SourceUnusableError` for a source that cannot be used."""
        found = self.locate(track_id)
        if found is None:
            return None
        kept = self._plans.get(track_id)
        if kept is not None and kept.source_file.version == found.version:
            return kept
        self.check_failed(found)
        try:
            plan = self._plan(found, taken)
        except PackagerError as exc:
            error = SourceUnusableError(track_id, found.name, _reason(exc))
            with self._lock:
                self._failures[track_id] = _Failure(
                    found.version, error, self._clock() + self.negative_ttl_s
                )
            raise error from exc
        with self._lock:
            self._plans[track_id] = plan
            self._failures.pop(track_id, None)
        return plan

    def check_failed(self, found: SourceFile) -> None:
        """Raise the error this very version of the source failed with, while it is
        remembered (``negative_ttl_s``); counted as a negative-cache hit."""
        failure = self._failures.get(found.track_id)
        if (
            failure is not None
            and failure.version == found.version
            and self._clock() < failure.until_s
        ):
            self._events.negative_hit()
            raise failure.error

    def _fingerprint(self, found: SourceFile) -> Fingerprint:
        kept = self._fingerprints.get(found.track_id)
        if kept is not None and kept[0] == found.version:
            return kept[1]
        fingerprint = fingerprint_source(
            found.path,
            found.given,
            ladder=self.ladder,
            segment_duration=self.segment_duration,
            single_file=False,
        )
        self._fingerprints[found.track_id] = (found.version, fingerprint)
        return fingerprint

    def _plan(self, found: SourceFile, taken: frozenset[str]) -> TrackPlan:
        fingerprint = self._fingerprint(found)
        kept = self._plans.get(found.track_id)
        if kept is not None and build_key(fingerprint) == kept.build:
            # Touched, not changed: the same bytes, the same plan.
            return _with_file(kept, found)
        self.probes += 1
        source = probe_source(found.path)
        entry = self.writeback.assign(found.track_id, fingerprint, taken=taken)
        presentation, warnings = plan_presentation(
            source,
            track_id=found.track_id,
            ladder=self.ladder,
            segment_duration=self.segment_duration,
            fingerprint=fingerprint,
            name_tag=entry.tag,
        )
        return TrackPlan(
            track_id=found.track_id,
            source_file=found,
            source=source,
            fingerprint=fingerprint,
            entry=entry,
            presentation=presentation,
            files=track_files(presentation),
            media=media_refs(presentation),
            mtime_s=float(int(found.path.stat().st_mtime)),
            warnings=tuple(warnings),
        )


def _with_file(plan: TrackPlan, found: SourceFile) -> TrackPlan:
    return replace(plan, source_file=found)
