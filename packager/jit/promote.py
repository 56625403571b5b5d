"""Promotion: a just-in-time track that is asked for often enough is packaged whole by
the batch packager (:func:`cadenza.packager.track.package_track`) into ROOT, in the
background.

- The policy: after ``after_requests`` media-segment reads of the track that reach
  storage (the hot cache answers the others; 0: never), counted per process.
- One promotion at a time, in one child process (started with ``spawn``, niced to
  the lowest priority but one), so promotion never competes with serving.
- The packaging gets a fresh version tag (recorded in the track's lineage first,
  :meth:`cadenza.packager.jit.writeback.WriteBack.reserve`), so no promoted URL equals
  a just-in-time URL.  Once it lands, ROOT holds the track and the inner store answers
  its manifests; the URLs the just-in-time manifests published keep working from the
  write-back area, or are built again from the source.
- Only a local ROOT is promoted into (an ``s3://`` ROOT is left to ``cadenza package``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Final

from cadenza.manifests.fingerprint import Fingerprint
from cadenza.packager.fingerprint import new_name_tag
from cadenza.packager.jit.events import JitEvents, PromotionOutcome
from cadenza.packager.jit.tracks import TrackPlan
from cadenza.packager.jit.writeback import WriteBack

log = logging.getLogger("cadenza.packager.jit")

NICENESS: Final = 10


def package_for_promotion(
    source: str,
    root: str,
    ladder_spec: str,
    segment_duration: Fraction,
    fingerprint: Fingerprint,
    track_id: str,
    name_tag: str,
) -> tuple[str, str | None]:
    """Package one source into ``root`` (in the child process): its status and error."""
    from cadenza.packager.ladder import load_ladder
    from cadenza.packager.track import PackageOptions, package_track

    options = PackageOptions(
        ladder=load_ladder(ladder_spec),
        segment_duration=segment_duration,
        track_id=track_id,
        fingerprint=fingerprint,
        name_tag=name_tag,
        force=True,
    )
    result = package_track(Path(source), Path(root), options)
    return result.status, result.error


def _lower_priority() -> None:
    os.nice(NICENESS)


class Promoter:
    def __init__(
        self,
        root: Path,
        *,
        after_requests: int,
        ladder_spec: str,
        segment_duration: Fraction,
        writeback: WriteBack,
        events: JitEvents,
    ) -> None:
        self.root = root
        self.after_requests = after_requests
        self._ladder_spec = ladder_spec
        self._segment_duration = segment_duration
        self._writeback = writeback
        self._events = events
        self._counts: dict[str, int] = {}
        self._waiting: list[TrackPlan] = []
        self._task: asyncio.Task[None] | None = None
        self._executor: ProcessPoolExecutor | None = None
        self.promoted: dict[str, str] = {}  # track id -> the promoted packaging's tag
        self.failed: dict[str, str] = {}  # track id -> why

    def requested(self, plan: TrackPlan) -> None:
        """One more media-segment read of ``plan``'s track; promotes at the threshold."""
        if self.after_requests <= 0:
            return
        count = self._counts.get(plan.track_id, 0) + 1
        self._counts[plan.track_id] = count
        if count == self.after_requests:
            self._waiting.append(plan)
            if self._task is None or self._task.done():
                self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._waiting:
            plan = self._waiting.pop(0)
            try:
                await self.promote(plan)
            except Exception:  # a failed promotion is logged; serving goes on
                log.exception("promoting %s failed", plan.track_id)

    async def promote(self, plan: TrackPlan) -> bool:
        """Package ``plan``'s source into ROOT under a fresh tag; whether it landed."""
        track_id = plan.track_id

        def fresh_tag() -> str:
            lineage = self._writeback.lineage(track_id)
            tag = new_name_tag({e.tag for e in lineage.entries} - {""})
            self._writeback.reserve(track_id, tag)
            return tag

        tag = await asyncio.to_thread(fresh_tag)
        self._events.promotion(PromotionOutcome.STARTED)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )
        loop = asyncio.get_running_loop()
        status, error = await loop.run_in_executor(
            self._executor,
            package_for_promotion,
            str(plan.source_file.path),
            str(self.root),
            self._ladder_spec,
            self._segment_duration,
            plan.fingerprint,
            track_id,
            tag,
        )
        if status != "packaged":
            self.failed[track_id] = error or status
            self._events.promotion(PromotionOutcome.FAILED)
            log.error("promoting %s failed: %s", track_id, error)
            return False
        self.promoted[track_id] = tag
        self._events.promotion(PromotionOutcome.DONE)
        log.info("promoted %s: packaged into ROOT under tag %s", track_id, tag)
        return True

    async def idle(self) -> None:
        """Wait until no promotion runs or waits (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._waiting.clear()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
