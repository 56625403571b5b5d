"""The just-in-time track store: the store's read face (:class:`TrackReader`) over an
inner store (ROOT, local or S3) and a folder of source files.

For a key ``<id>/<name>``:

1. the inner store first: a packaged track, or a promoted one, wins;
2. on a miss, when ``<id>`` names a source (:mod:`.sources`) and ROOT holds no complete
   track of that id, the just-in-time object: ``presentation.json``, ``master.m3u8``,
   ``manifest.mpd`` and the media playlists from the source's plan (:mod:`.tracks`), the
   init and media segments read back from the write-back area (provenance
   ``JIT_STORED``) or encoded now (``JIT_BUILT``) and written back in the background;
3. a segment of an earlier build of the track (its name carries that build's version
   tag, :mod:`.writeback`) from the write-back area only: its source is gone and it
   cannot be built again;
4. else the inner store's miss (``404``).

Builds run in the bounded pool of :mod:`.builder`, one per key at a time; what was just
built is kept (``built_cache_bytes``) so a ``HEAD`` and the ``GET`` after it, or the
prefetch and the request after it, encode once.

Read-ahead: a player that reads a rendition's media playlist reads its init and first
segment next, and one that reads segment *n* soon reads *n + 1*; those are built in the
background (:data:`~cadenza.store.api.READ_PRIORITY`: on the pool's own background
thread, when it is free), starting as the read arrives, so segment *n + 1* is built
beside segment *n* and a player filling its buffer finds it made.  An object built
ahead is answered as ``JIT_STORED``: it was not built for the read that gets it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Final

from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.packager.jit.builder import BuildPool
from cadenza.packager.jit.events import BuildKind, CountingEvents, JitEvents, Served
from cadenza.packager.jit.promote import Promoter
from cadenza.packager.jit.tracks import Planner, TrackPlan, name_tag_of
from cadenza.store.api import (
    READ_PRIORITY,
    ObjectInfo,
    Provenance,
    ReadPriority,
    StoredObject,
    TrackReader,
)
from cadenza.store.complete import is_track_name
from cadenza.store.errors import ObjectMissingError, StoreError, StoreUnavailableError

log = logging.getLogger("cadenza.packager.jit")

GONE: Final = (
    "was built from an earlier version of its source, which has changed or gone, and was "
    "not written back"
)


class _Recent:
    """The objects built last, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[str, StoredObject] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> StoredObject | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: str, obj: StoredObject) -> None:
        if len(obj.body) > self._max_bytes or key in self._items:
            return
        self._items[key] = obj
        self._bytes += len(obj.body)
        while self._bytes > self._max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped.body)


class JitStore:
    """See the module docstring.  ``events`` receives what happens (the origin wires
    its metrics in with :meth:`attach_events`)."""

    def __init__(
        self,
        inner: TrackReader,
        planner: Planner,
        pool: BuildPool,
        *,
        events: CountingEvents,
        promoter: Promoter | None = None,
        built_cache_bytes: int = 32 * 1024 * 1024,
        read_ahead: bool = True,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.planner = planner
        self.pool = pool
        self.events = events
        self.promoter = promoter
        self._recent = _Recent(built_cache_bytes)
        self._writes: set[asyncio.Future[None]] = set()
        self._ahead: set[asyncio.Future[None]] = set()
        self._ahead_keys: set[str] = set()  # being read ahead (a HEAD and GET ask twice)
        self.read_ahead = read_ahead

    def attach_events(self, events: JitEvents) -> None:
        self.events.forward_to(events)

    # -- the read face ---------------------------------------------------------------
    async def head(self, key: str) -> ObjectInfo:
        try:
            return await self.inner.head(key)
        except ObjectMissingError as miss:
            return (await self._jit(key, miss)).info

    async def read(self, key: str) -> StoredObject:
        try:
            return await self.inner.read(key)
        except ObjectMissingError as miss:
            obj = await self._jit(key, miss)
        built = obj.provenance is Provenance.JIT_BUILT
        self.events.served(Served.BUILT if built else Served.STORED)
        return obj

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            return await self.inner.read_range(key, start, end)
        except ObjectMissingError as miss:
            return (await self._jit(key, miss)).body[start : end + 1]

    async def ping(self) -> None:
        await self.inner.ping()

    async def list_tracks(self) -> list[str]:
        """The inner store's complete tracks and every source's id, sorted."""
        packaged = await self.inner.list_tracks()
        try:
            sources = await asyncio.to_thread(self.planner.sources.track_ids)
        except Exception as exc:  # a sources folder that cannot be listed
            log.error("cannot list the JIT sources: %s", exc)
            raise StoreUnavailableError(self.name, "cannot list the sources") from exc
        return sorted(set(packaged) | set(sources))

    async def close(self) -> None:
        for task in list(self._ahead):
            task.cancel()
        await self.pool.close()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self.promoter is not None:
            await self.promoter.close()
        await self.inner.close()

    async def drain(self) -> None:
        """Wait for the read-ahead builds and write-backs started so far (tests,
        shutdown)."""
        while self._ahead or self._writes:
            await asyncio.gather(*self._ahead, *self._writes, return_exceptions=True)

    # -- just in time ----------------------------------------------------------------
    async def _jit(self, key: str, miss: ObjectMissingError) -> StoredObject:
        track_id, _, name = key.partition("/")
        if not name or not is_track_name(track_id):
            raise miss
        recent = self._recent.get(key)
        if recent is not None:  # built for this read's HEAD, or ahead of it
            kept = self.planner.known(track_id)
            if kept is not None and name in kept.media:
                self._maybe_read_ahead(kept, name)
            return recent
        if await self._packaged(track_id):
            return await self._from_lineage(track_id, name, miss, rebuild=True)
        plan = await self._plan(track_id)
        if plan is None:  # no such source (any more)
            return await self._from_lineage(track_id, name, miss, rebuild=False)
        if name in plan.files or name in plan.media:
            # Started before this read's own build: the next one builds beside it.
            self._maybe_read_ahead(plan, name)
            return await self._from_plan(plan, key, name)
        return await self._from_lineage(track_id, name, miss, rebuild=False)

    def _maybe_read_ahead(self, plan: TrackPlan, name: str) -> None:
        """For a player's read, build in the background what it reads after ``name``
        (see the module docstring): nothing for a track-level manifest."""
        if not self.read_ahead or READ_PRIORITY.get() is not ReadPriority.PLAYER:
            return
        names = next_media(plan, name)
        if not names:
            return

        async def warm() -> None:
            READ_PRIORITY.set(ReadPriority.BACKGROUND)  # this task's reads only
            for ahead in names:
                key = f"{plan.track_id}/{ahead}"
                if self._recent.get(key) is not None or key in self._ahead_keys:
                    continue
                self._ahead_keys.add(key)
                try:
                    await self._media(plan, key, ahead)
                except StoreError:
                    return  # deferred (no idle thread) or failed: the player asks itself
                finally:
                    self._ahead_keys.discard(key)

        task = asyncio.ensure_future(warm())
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    async def _from_plan(self, plan: TrackPlan, key: str, name: str) -> StoredObject:
        """A manifest of the plan (made with it), or one of its segments."""
        body = plan.files.get(name)
        if body is None:
            return await self._media(plan, key, name)
        info = ObjectInfo(len(body), plan.mtime_s, f"jit-{plan.build[:12]}-{len(body):x}")
        return StoredObject(info, body, Provenance.JIT_BUILT)

    async def _packaged(self, track_id: str) -> bool:
        """Whether ROOT holds a complete track of this id (then it wins)."""
        try:
            await self.inner.head(f"{track_id}/{PRESENTATION_NAME}")
        except ObjectMissingError:
            return False
        return True

    async def _plan(self, track_id: str) -> TrackPlan | None:
        # One stat says whether the kept plan still holds (the common case), or whether
        # this version of the source is known to be unusable (no build, no probe).
        found = await asyncio.to_thread(self.planner.locate, track_id)
        if found is None:
            return None
        kept = self.planner.known(track_id)
        if kept is not None and found.version == kept.source_file.version:
            return kept
        self.planner.check_failed(found)
        plan, _ = await self.pool.run(
            f"plan:{track_id}", BuildKind.MANIFEST, lambda: self.planner.current(track_id)
        )
        return plan

    async def _media(self, plan: TrackPlan, key: str, name: str) -> StoredObject:
        ref = plan.media[name]
        player = READ_PRIORITY.get() is ReadPriority.PLAYER
        if self.promoter is not None and ref.number is not None and player:
            self.promoter.requested(plan)
        stored = await self._written_back(plan.track_id, plan.build, key, name)
        if stored is not None:
            return stored
        kind = BuildKind.INIT if ref.number is None else BuildKind.SEGMENT
        body, led = await self.pool.run(
            f"{plan.build}:{key}", kind, lambda: plan.build_object(name)
        )
        obj = StoredObject(
            ObjectInfo(len(body), plan.mtime_s, f"jit-{plan.build[:12]}-{len(body):x}"),
            body,
            # Built ahead, it reaches its reader as made earlier, like a written-back one.
            Provenance.JIT_BUILT if player else Provenance.JIT_STORED,
        )
        self._recent.put(key, obj)
        if led:
            self._write_back(plan, name, body)
        return obj

    async def _written_back(
        self, track_id: str, build: str, key: str, name: str
    ) -> StoredObject | None:
        try:
            found = await asyncio.to_thread(self.planner.writeback.read, track_id, build, name)
        except StoreError as exc:
            log.warning("JIT write-back unreadable, building instead: %s", exc)
            return None
        if found is None:
            return None
        body, mtime_s = found
        info = ObjectInfo(len(body), mtime_s, f"{len(body):x}-{int(mtime_s * 1e9):x}")
        obj = StoredObject(info, body, Provenance.JIT_STORED)
        self._recent.put(key, obj)
        return obj

    async def _from_lineage(
        self, track_id: str, name: str, miss: ObjectMissingError, *, rebuild: bool
    ) -> StoredObject:
        """A segment of a build the lineage knows, while the manifests do not come from
        the source's plan (ROOT holds the track: promoted; or the source changed or
        went): from the write-back area, or, with ``rebuild`` and when it is the current
        build of the source, encoded again.  Never a name no JIT build published."""
        tag = name_tag_of(name.rpartition("/")[2])
        if tag is None or "/" not in name:
            raise miss
        try:
            lineage = await asyncio.to_thread(self.planner.writeback.lineage, track_id)
        except StoreError as exc:
            log.error("JIT lineage of %s unreadable: %s", track_id, exc)
            raise StoreUnavailableError(self.name, "a JIT lineage cannot be read") from exc
        entry = lineage.by_tag(tag)
        if entry is None or not entry.source_sha256:  # unknown, or a promotion's tag
            raise miss
        key = f"{track_id}/{name}"
        stored = await self._written_back(track_id, entry.build, key, name)
        if stored is not None:
            return stored
        if rebuild:
            plan = await self._plan(track_id)
            current = plan is not None and plan.build == entry.build
            if plan is not None and current and (name in plan.media or name in plan.files):
                return await self._from_plan(plan, key, name)
        raise ObjectMissingError(key, GONE)

    def _write_back(self, plan: TrackPlan, name: str, body: bytes) -> None:
        writeback = self.planner.writeback
        if not writeback.enabled:
            return

        def write() -> None:
            try:
                writeback.write(plan.track_id, plan.build, name, body, mtime_s=plan.mtime_s)
            except StoreError as exc:
                log.warning("JIT write-back failed (the object is built again next time): %s", exc)

        future = asyncio.ensure_future(asyncio.to_thread(write))
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)


def next_media(plan: TrackPlan, name: str) -> list[str]:
    """What a player reads after ``name``: after a rendition's media playlist its init
    and first segment, after its init the first segment, after segment *n* segment
    *n + 1* (none after the last); names below the track."""
    ref = plan.media.get(name)
    if ref is None:
        rendition_id, slash, file = name.partition("/")
        if not slash or not file.endswith(".m3u8"):
            return []
        rendition = next((r for r in plan.presentation.renditions if r.id == rendition_id), None)
        if rendition is None or not rendition.segments:
            return []
        first = rendition.segment_name(rendition.segments[0])
        return [f"{rendition.id}/{rendition.init_name}", f"{rendition.id}/{first}"]
    rendition = plan.presentation.rendition(ref.rendition_id)
    index = 0 if ref.number is None else ref.number  # segment n is at index n - 1
    if index >= len(rendition.segments):
        return []
    return [f"{rendition.id}/{rendition.segment_name(rendition.segments[index])}"]
