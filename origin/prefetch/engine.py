"""Prefetch's background work, never on a player's request path.

The request path only appends to a bounded queue (:meth:`Prefetcher.note`,
no I/O, no await).  A planner task reads it: it counts the session's move from
one content id to the next (:mod:`.transitions`), takes the CMCD ``nor`` the
player named (CTA-5004) when :func:`.plan.resolve_nor` accepts it, and once a
session reaches the half of a track (:func:`.plan.near_end`) it predicts the
next tracks (:func:`.plan.predict_next`) and queues their preparation, once
per (session, next track).  A warmer task then loads each object through the
hot cache (``origin.objects.load_object``, which builds a just-in-time object
like a request would), one at a time, within three budgets: a global token
bucket (``prefetch_rate_per_s``, ``prefetch_burst``), a per-session one
(``prefetch_session_max`` a minute), and storage's own word that its build pool
is busy (a ``busy()`` method, when storage has one).  Pending work is bounded:
the oldest is dropped first, and counted.

A session's queue, its position and its predictions live in this process (an
expiring map bounded like the memory session store); the transition counts are
shared through Redis when ``redis_url`` is set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Final

from aiohttp import web

from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.origin.errors import BuilderBusyError, ObjectTooLargeError, OriginError
from cadenza.origin.expiring import ExpiringLru
from cadenza.origin.keys import CACHE, PRESENTATIONS, STORAGE
from cadenza.origin.objects import load_object
from cadenza.origin.prefetch.ledger import WarmLedger
from cadenza.origin.prefetch.metrics import DropReason, PrefetchMetrics
from cadenza.origin.prefetch.plan import (
    Prediction,
    WarmReason,
    is_track_id,
    likely_rendition,
    near_end,
    predict_next,
    resolve_nor,
    segment_position,
    warm_keys,
)
from cadenza.origin.prefetch.state import PrefetchSession, Seen, WarmJob
from cadenza.origin.prefetch.transitions import TransitionStore
from cadenza.origin.rendering import presentation_of
from cadenza.origin.sessions import Bucket, RateLimiter, take_token
from cadenza.origin.settings import Settings
from cadenza.store.api import READ_PRIORITY, ReadPriority

log = logging.getLogger("cadenza.origin.prefetch")

EVENTS_MAX: Final = 1024  # media requests waiting to be planned from
JOBS_MAX: Final = 256  # warms waiting for the warmer
# Stated queues: per client address, like beacons per session.
QUEUE_RATE_PER_S: Final = 2.0
QUEUE_BURST: Final = 10


class Prefetcher:
    def __init__(
        self,
        settings: Settings,
        metrics: PrefetchMetrics,
        transitions: TransitionStore,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.transitions = transitions
        self.ledger = WarmLedger()
        self.sessions: ExpiringLru[str, PrefetchSession] = ExpiringLru(
            settings.sessions_max, settings.session_ttl_s
        )
        self.queues: ExpiringLru[str, tuple[str, ...]] = ExpiringLru(
            settings.sessions_max, settings.session_ttl_s
        )
        self.queue_limiter = RateLimiter(QUEUE_RATE_PER_S, QUEUE_BURST)
        self._session_budget = RateLimiter(
            settings.prefetch_session_max / 60.0, max(1, settings.prefetch_session_max)
        )
        self._bucket: Bucket | None = None
        self._clock = clock
        self._events: collections.deque[Seen] = collections.deque()
        self._jobs: collections.deque[WarmJob] = collections.deque()
        self._events_ready = asyncio.Event()
        self._jobs_ready = asyncio.Event()
        self._working = 0
        self._app: web.Application | None = None

    # -- what the request path and the API call (no I/O) ---------------------

    def note(self, seen: Seen) -> None:
        """Queue a session's request for the planner; the oldest goes when full."""
        if not self.settings.prefetch or self._app is None:
            return
        if len(self._events) >= EVENTS_MAX:
            self._events.popleft()
            self.metrics.drop(DropReason.EVENTS_FULL)
        self._events.append(seen)
        self._events_ready.set()

    def state_queue(self, sid: str, tracks: tuple[str, ...]) -> None:
        """A session's stated queue (it replaces the last); planned from at once."""
        self.queues[sid] = tracks
        found = self.sessions.get(sid)
        if found is not None:  # a new queue may name new next tracks
            self.sessions[sid] = replace(found, prepared=frozenset(), predicted=())
        self.note(Seen(sid, None))

    def idle(self) -> bool:
        """Nothing queued and nothing in progress."""
        return not self._events and not self._jobs and self._working == 0

    async def predictions(self, sid: str, track: str | None) -> tuple[Prediction, ...]:
        """The likely next tracks of session ``sid`` now (``track``: its current one,
        when prefetch has not seen it)."""
        found = self.sessions.get(sid) or PrefetchSession(content=track, track=track)
        if found.track is None:
            return ()
        successors = await self.transitions.successors(found.content or found.track)
        return predict_next(
            found.track,
            self.queues.get(sid) or (),
            successors,
            min_probability=self.settings.prefetch_min_probability,
            max_tracks=self.settings.prefetch_max_tracks,
        )

    # -- the background tasks -----------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self, app: web.Application) -> AsyncIterator[None]:
        self._app = app
        # Every read of these tasks is on nobody's behalf (store.api.READ_PRIORITY):
        # a storage that builds objects gives players its threads first.
        tasks = []
        for ready, step in (
            (self._events_ready, self._next_event),
            (self._jobs_ready, self._next_job),
        ):
            background = contextvars.copy_context()  # one per task
            background.run(READ_PRIORITY.set, ReadPriority.BACKGROUND)
            tasks.append(asyncio.create_task(self._loop(ready, step), context=background))
        try:
            yield
        finally:
            self._app = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(
        self,
        ready: asyncio.Event,
        step: Callable[[web.Application], Awaitable[bool]],
    ) -> None:
        while True:
            await ready.wait()
            ready.clear()
            app = self._app
            while app is not None:
                self._working += 1
                try:
                    if not await step(app):
                        break
                except asyncio.CancelledError:
                    raise
                except Exception:  # prefetch must never take the origin down
                    log.exception("prefetch step failed")
                finally:
                    self._working -= 1

    async def _next_event(self, app: web.Application) -> bool:
        if not self._events:
            return False
        await self._plan(app, self._events.popleft())
        return True

    async def _next_job(self, app: web.Application) -> bool:
        if not self._jobs:
            return False
        job = self._jobs.popleft()
        if job.key is not None:
            await self._warm(app, job.key, job.sid, job.reason)
        elif job.track is not None:
            await self._prepare(app, job)
        return True

    def _submit(self, job: WarmJob) -> None:
        if len(self._jobs) >= JOBS_MAX:
            self._jobs.popleft()
            self.metrics.drop(DropReason.PENDING_FULL)
        self._jobs.append(job)
        self._jobs_ready.set()

    # -- planning -------------------------------------------------------------

    async def _plan(self, app: web.Application, seen: Seen) -> None:
        before = self.sessions.get(seen.sid) or PrefetchSession()
        state = before
        if seen.key is not None:
            state = await self._follow(app, state, seen)
        elif seen.nors:
            self._take_nors(seen, seen.base or state.key)
        # Predicted when a track starts (for the hints), again at its half (then
        # prepared), and when a queue is stated: not on every request.
        changed = state.track != before.track or state.near_end != before.near_end
        if state.track is not None and (changed or seen.key is None):
            state = await self._predict(state, seen.sid)
        self.sessions[seen.sid] = state

    async def _follow(
        self, app: web.Application, state: PrefetchSession, seen: Seen
    ) -> PrefetchSession:
        """The session after its request for ``seen.key``: transitions counted,
        its nor warmed, its position in the track."""
        assert seen.key is not None
        key = seen.key
        track = key.partition("/")[0]
        content = seen.cid if seen.cid and is_track_id(seen.cid) else track
        if state.content is not None and state.content != content:
            await self.transitions.record(state.content, content)
        if track != state.track:
            state = PrefetchSession(track=track)
        state = replace(state, content=content, key=key, hls=state.hls or key.endswith(".m3u8"))
        self._take_nors(seen, key)
        if not key.endswith(".m4s") and not key.endswith(".mp4"):
            return state
        try:
            presentation, _ = await presentation_of(app, track)
        except OriginError:
            return state
        position = segment_position(presentation, key)
        if position is None:
            return state
        rendition, index, count = position
        return replace(
            state, rendition=rendition.id, near_end=state.near_end or near_end(index, count)
        )

    def _take_nors(self, seen: Seen, base: str | None) -> None:
        """Warm each ``nor`` that resolves inside ``base``'s track folder; count the rest."""
        for nor in seen.nors:
            resolved = None if base is None else resolve_nor(nor, base)
            if resolved is None:
                self.metrics.drop(DropReason.BAD_NOR)
            else:
                self._submit(WarmJob(seen.sid, WarmReason.NOR, key=resolved))

    async def _predict(self, state: PrefetchSession, sid: str) -> PrefetchSession:
        """Predict the next tracks; past the half of the track, queue the
        preparation of those not yet prepared."""
        assert state.track is not None
        successors = await self.transitions.successors(state.content or state.track)
        predicted = predict_next(
            state.track,
            self.queues.get(sid) or (),
            successors,
            min_probability=self.settings.prefetch_min_probability,
            max_tracks=self.settings.prefetch_max_tracks,
        )
        playing = None
        parsed = self._app[PRESENTATIONS].get(state.track) if self._app else None
        if parsed is not None and state.rendition is not None:
            with contextlib.suppress(KeyError):
                playing = parsed[1].rendition(state.rendition)
        if not state.near_end:
            return replace(state, predicted=predicted)
        prepared = set(state.prepared)
        for prediction in predicted:
            if prediction.track in prepared:
                continue
            prepared.add(prediction.track)
            self._submit(WarmJob(sid, prediction.reason, track=prediction.track, playing=playing))
        return replace(state, predicted=predicted, prepared=frozenset(prepared))

    # -- warming --------------------------------------------------------------

    async def _prepare(self, app: web.Application, job: WarmJob) -> None:
        """A next track's first objects: its model first (to know the names)."""
        assert job.track is not None
        if not await self._warm(app, f"{job.track}/{PRESENTATION_NAME}", job.sid, job.reason):
            return
        try:
            presentation, _ = await presentation_of(app, job.track)
        except OriginError:
            return
        rendition = likely_rendition(presentation, job.playing)
        if rendition is None:
            return
        for key in warm_keys(job.track, rendition, self.settings.prefetch_segments)[1:]:
            await self._warm(app, key, job.sid, job.reason)

    async def _warm(self, app: web.Application, key: str, sid: str, reason: WarmReason) -> bool:
        """Load ``key`` into the hot cache within the budgets; whether it is hot now."""
        now_s = self._clock()
        wasted = self.ledger.expire(now_s)
        if wasted:
            self.metrics.wasted.inc(wasted)
        if app[CACHE].peek(key) is not None:
            return True
        if not self._session_budget.allow(sid, time.time()):
            self.metrics.drop(DropReason.SESSION_BUDGET)
            return False
        busy = getattr(app[STORAGE], "busy", None)
        if callable(busy) and busy():
            self.metrics.drop(DropReason.BUSY)
            return False
        await self._global_token()
        try:
            _, how = await load_object(app, key)
        except BuilderBusyError:  # no build thread to spare for a warm: players first
            self.metrics.drop(DropReason.BUSY)
            return False
        except (OriginError, ObjectTooLargeError) as exc:
            log.debug("prefetch of %s failed: %s", key, exc)
            self.metrics.drop(DropReason.FAILED)
            return False
        if how == "miss":  # this warm loaded it: a player's first hit on it is prefetch's
            wasted = self.ledger.add(key, self._clock())
            if wasted:
                self.metrics.wasted.inc(wasted)
            self.metrics.issued.labels(reason.value).inc()
        return True

    async def _global_token(self) -> None:
        """Wait for a token of the global bucket (its rate is the wait's only cause)."""
        rate_per_s = self.settings.prefetch_rate_per_s
        burst = max(1, self.settings.prefetch_burst)
        while True:
            allowed, self._bucket = take_token(self._bucket, time.monotonic(), rate_per_s, burst)
            if allowed:
                return
            await asyncio.sleep(max(0.001, (1.0 - self._bucket.tokens) / rate_per_s))


PREFETCHER: Final = web.AppKey("prefetcher", Prefetcher)
