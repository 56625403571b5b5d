"""One watcher per live track: its ``live.json`` read once per change, and one
event that wakes every request waiting for the next change.

A track is live while ``<track>/live.json`` exists.  The first request for a
track asks the storage once; that a VOD track (one with ``presentation.json``)
is not live is remembered for :data:`NOT_LIVE_TTL_S`, so it costs two ``head``
requests per that time, and only for an object not in the hot cache (a folder
with neither file is asked again every time: a live track's first part may not
be out yet); a live track gets a
:class:`LiveWatch`, which polls ``live.json``'s size and modification time every
``live_poll_s`` while anyone waits on it or asked within :data:`IDLE_S`, and
re-reads and parses it only when they change.  An idle watch stops polling and
is dropped; the next request makes a new one (which reads the file afresh), so a
model served is never older than one poll.  No request holds a thread: waiting
is awaiting an ``asyncio.Event``, replaced by a fresh one at every change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Final

from cadenza.manifests.errors import InvalidLiveStateError
from cadenza.manifests.live import LIVE_STATE_NAME, LivePresentation
from cadenza.manifests.live_json import live_from_json
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.origin.errors import ObjectNotFoundError, OriginError, StorageUnavailableError
from cadenza.origin.metrics_live import LiveMetrics
from cadenza.origin.storage import ObjectInfo, Storage, StoredObject

log = logging.getLogger(__name__)

NOT_LIVE_TTL_S: Final = 2.0  # a track found not live is asked about again after this
IDLE_S: Final = 2.0  # a watch with no request for this long stops polling
# A modification time this recent may hide a later rewrite of the same size within
# the same timestamp tick (a jiffy on Linux file systems, a second on S3): the file is
# read again (and parsed only when its bytes differ).  The backend's validator is part
# of the stamp too: S3's ETag changes with the bytes, whatever the two clocks say.
RECENT_S: Final = 2.0
_NOT_LIVE_KEPT: Final = 4096  # tracks remembered as not live (then forgotten at once)


class LiveWatch:
    """The newest model of one live track, and the event of its next change."""

    def __init__(
        self,
        track: str,
        storage: Storage,
        model: LivePresentation,
        stored: StoredObject,
        *,
        poll_s: float,
        metrics: LiveMetrics,
        on_idle: Callable[[LiveWatch], None],
    ) -> None:
        self.track = track
        self.model = model
        self._storage = storage
        self._stamp = _stamp(stored.info)
        self._body = stored.body
        self._poll_s = poll_s
        self._metrics = metrics
        self._on_idle = on_idle
        self._changed = asyncio.Event()
        self._waiters = 0
        self._asked_s = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        # Manifests rendered from one model (rendered()).
        self._rendered_for: LivePresentation | None = None
        self._rendered: dict[Hashable, bytes] = {}

    @property
    def key(self) -> str:
        return f"{self.track}/{LIVE_STATE_NAME}"

    def touch(self) -> None:
        """A request read this track: keep (or start) polling."""
        self._asked_s = time.monotonic()
        if self._task is None and not self.stopped:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    def rendered(
        self, model: LivePresentation, shape: Hashable, render: Callable[[], str]
    ) -> bytes:
        """A manifest of ``model``, rendered once per model and ``shape`` (what else
        its bytes depend on: the rendition and skip of a media playlist, the filters,
        steering and clock URL of a master or MPD) however many requests it answers:
        a part's arrival releases every blocked reload at once, and every player's
        MPD refresh asks the same."""
        if self._rendered_for is not model:
            self._rendered_for, self._rendered = model, {}
        body = self._rendered.get(shape)
        if body is None:
            body = self._rendered[shape] = render().encode("utf-8")
        return body

    async def wait_change(self, timeout_s: float, *, request: bool = True) -> bool:
        """Wait for the next change of the model; False after ``timeout_s`` without
        one.  ``request``: the waiter is a request (counted in the blocked gauge),
        not the reader of an open segment."""
        event = self._changed
        gauge = self._metrics.blocked_requests if request else None
        self._waiters += 1
        if gauge is not None:
            gauge.inc()
        self.touch()
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await event.wait()
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
            if gauge is not None:
                gauge.dec()
        return True

    async def wait_until(
        self, reached: Callable[[LivePresentation], bool], timeout_s: float
    ) -> LivePresentation | None:
        """The first model (this one, or a later one) for which ``reached`` holds;
        None when none did within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not reached(self.model):
            if self.model.ended:
                return self.model if reached(self.model) else None
            if not await self.wait_change(deadline - time.monotonic()):
                return self.model if reached(self.model) else None
        return self.model

    async def refresh(self) -> bool:
        """Re-read ``live.json`` when its size or modification time changed; True
        when the model changed (every waiter is then woken)."""
        info = await self._storage.head(self.key)
        if _stamp(info) == self._stamp and time.time() - info.mtime_s > RECENT_S:
            return False
        stored = await self._storage.read(self.key)
        self._stamp = _stamp(stored.info)
        if stored.body == self._body:
            return False
        self._body = stored.body
        model = live_from_json(stored.body)
        self.model = model
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    async def _poll(self) -> None:
        try:
            while self._waiters or time.monotonic() - self._asked_s < IDLE_S:
                await asyncio.sleep(self._poll_s)
                try:
                    await self.refresh()
                except ObjectNotFoundError:
                    log.info("live track %s: live.json is gone; no longer watched", self.track)
                    break
                except (OriginError, InvalidLiveStateError, UnicodeDecodeError) as exc:
                    # Storage trouble, or a damaged file: the last model stays.
                    log.warning("live track %s: live.json not read: %s", self.track, exc)
        finally:
            self._task = None
            self.stopped = True
            self._on_idle(self)

    def stop(self) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()


def _stamp(info: ObjectInfo) -> tuple[float, int, str]:
    return info.mtime_s, info.size_bytes, info.etag_hint


async def _exists(storage: Storage, key: str) -> bool:
    try:
        await storage.head(key)
    except ObjectNotFoundError:
        return False
    return True


class LiveTracks:
    """The watches of this process's live tracks (at most one per track)."""

    def __init__(self, storage: Callable[[], Storage], poll_s: float, metrics: LiveMetrics) -> None:
        self._storage = storage
        self._poll_s = poll_s
        self._metrics = metrics
        self._watches: dict[str, LiveWatch] = {}
        self._opening: dict[str, asyncio.Future[LiveWatch | None]] = {}
        self._not_live: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._watches)

    async def watch(self, track: str) -> LiveWatch | None:
        """The watch of ``track`` when it is live, else None (remembered a while)."""
        found = self._watches.get(track)
        if found is not None and not found.stopped:
            found.touch()
            return found
        since = self._not_live.get(track)
        if since is not None:
            if time.monotonic() - since < NOT_LIVE_TTL_S:
                return None
            del self._not_live[track]
        opening = self._opening.get(track)
        if opening is not None:
            return await asyncio.shield(opening)
        future: asyncio.Future[LiveWatch | None] = asyncio.get_running_loop().create_future()
        self._opening[track] = future
        try:
            made = await self._open(track)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it themselves
            raise
        finally:
            self._opening.pop(track, None)
        future.set_result(made)
        return made

    async def _open(self, track: str) -> LiveWatch | None:
        storage = self._storage()
        key = f"{track}/{LIVE_STATE_NAME}"
        try:
            # A HEAD first: a VOD track's answer has no body (nothing to read, or to lose).
            await storage.head(key)
            stored = await storage.read(key)
        except ObjectNotFoundError:
            # Remembered only for a VOD track (its model exists): a folder with neither
            # may be a live track whose first part is not out yet.
            if await _exists(storage, f"{track}/{PRESENTATION_NAME}"):
                self._remember_not_live(track)
            return None
        except StorageUnavailableError as exc:
            # Not known to be live: served as VOD (its cached objects stale-if-error), and
            # not asked again for a while, so an outage costs no request a storage timeout.
            log.warning("track %s: whether it is live is unknown: %s", track, exc)
            self._remember_not_live(track)
            return None
        model = live_from_json(stored.body)
        watch = LiveWatch(
            track,
            storage,
            model,
            stored,
            poll_s=self._poll_s,
            metrics=self._metrics,
            on_idle=self._forget,
        )
        self._watches[track] = watch
        self._metrics.tracks_watched.inc()
        watch.touch()
        return watch

    def _remember_not_live(self, track: str) -> None:
        if len(self._not_live) >= _NOT_LIVE_KEPT:
            self._not_live.clear()
        self._not_live[track] = time.monotonic()

    def _forget(self, watch: LiveWatch) -> None:
        if self._watches.get(watch.track) is watch:
            del self._watches[watch.track]
            self._metrics.tracks_watched.dec()

    async def close(self) -> None:
        for watch in list(self._watches.values()):
            watch.stop()
        await asyncio.sleep(0)
        self._watches.clear()
