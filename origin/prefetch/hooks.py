"""What the rest of the origin calls of prefetch: :func:`add_prefetch` (from
``create_app``), and on the request path (no I/O, no await):
:func:`note_media_request` (a session's request, for the planner),
:func:`settle_loaded` (was this hit prefetch's?), :func:`preload_hint` (the
``Link`` to the likely next track's manifest) and :func:`note_first_byte`
(``cadenza_first_byte_seconds``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from cadenza.abr.cmcd import parse_request_cmcd
from cadenza.manifests.model import MASTER_NAME, MPD_NAME
from cadenza.origin.core.heads import ObjectChoice, Redirect
from cadenza.origin.core.request import MediaRequest
from cadenza.origin.keys import METRICS, PRESENTATIONS, SETTINGS
from cadenza.origin.prefetch.engine import PREFETCHER, Prefetcher
from cadenza.origin.prefetch.ledger import Settled
from cadenza.origin.prefetch.metrics import FirstByteSource, prefetch_metrics
from cadenza.origin.prefetch.plan import in_last_segments, segment_position
from cadenza.origin.prefetch.queue_api import handle_queue
from cadenza.origin.prefetch.state import Seen
from cadenza.origin.prefetch.transitions import FallbackTransitions, MemoryTransitionStore
from cadenza.origin.redis_store import RedisBackend
from cadenza.origin.telemetry import Observed
from cadenza.store.api import Provenance

QUEUE_ROUTE: Final = "/v1/sessions/{sid:.+}/queue"


def add_prefetch(app: web.Application) -> None:
    """The prefetcher (memory transitions until :func:`_prefetch_ctx` opens
    Redis), its background tasks, and ``POST /v1/sessions/{sid}/queue``."""
    settings = app[SETTINGS]
    metrics = prefetch_metrics(app[METRICS].registry)
    app[PREFETCHER] = Prefetcher(settings, metrics, MemoryTransitionStore())
    app.cleanup_ctx.append(_prefetch_ctx)
    app.router.add_post(QUEUE_ROUTE, handle_queue)


async def _prefetch_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    prefetcher = app[PREFETCHER]
    backend = None
    if settings.redis_url:
        backend = RedisBackend(settings.redis_url, timeout_s=settings.redis_timeout_s)
        local = MemoryTransitionStore()
        prefetcher.transitions = FallbackTransitions(backend.transitions(), local)
    try:
        async with prefetcher.running(app):
            yield
    finally:
        if backend is not None:
            await backend.close()


def note_media_request(app: web.Application, asked: MediaRequest, observed: Observed) -> None:
    """A session's request for a file of a track (not its master or MPD): the
    planner learns from it and warms the ``nor`` it names (CMCD, CTA-5004)."""
    prefetcher = app.get(PREFETCHER)
    if prefetcher is None:
        return
    query = asked.query or {}
    text = query.get("CMCD")
    nors: tuple[str, ...] = ()
    if "nor" in (text or "") or "nor" in asked.headers.get("CMCD-Request", ""):
        cmcd = parse_request_cmcd(text, asked.headers)  # the parser requests are read with
        value = cmcd.values.get("nor")
        items = value if isinstance(value, tuple) else (value,)
        nors = tuple(item if isinstance(item, str) else "" for item in items)
    cid = observed.state.cid if observed.state is not None else None
    prefetcher.note(Seen(observed.sid, asked.key, cid, nors))


def settle_loaded(app: web.Application, key: str, how: str) -> bool:
    """Whether this answer is the first use of an object prefetch warmed
    (counted used, or wasted when it had left the hot cache)."""
    prefetcher = app.get(PREFETCHER)
    if prefetcher is None or not len(prefetcher.ledger):
        return False
    # "collapsed": the player's request joined the warm's load, already under way.
    settled = prefetcher.ledger.settle(key, how in ("hit", "collapsed"), time.monotonic())
    if settled is Settled.USED:
        prefetcher.metrics.used.inc()
        return True
    if settled is Settled.WASTED:
        prefetcher.metrics.wasted.inc()
    return False


def preload_hint(app: web.Application, key: str, sid: str) -> str | None:
    """``Link: </B/master.m3u8>; rel=preload; as=fetch`` (RFC 8288; the MPD for a
    session that never asked for a media playlist) for the most likely next
    track, on the session's media playlist and the last segments of its track."""
    prefetcher = app.get(PREFETCHER)
    state = prefetcher.sessions.get(sid) if prefetcher is not None else None
    if state is None or not state.predicted:
        return None
    track, _, rest = key.partition("/")
    if track != state.track or rest.count("/") != 1:
        return None
    if not key.endswith(".m3u8"):
        parsed = app[PRESENTATIONS].get(track)
        position = segment_position(parsed[1], key) if parsed is not None else None
        if position is None or not in_last_segments(position[1], position[2]):
            return None
    manifest = MASTER_NAME if state.hls or key.endswith(".m3u8") else MPD_NAME
    return f"</{state.predicted[0].track}/{manifest}>; rel=preload; as=fetch"


def note_first_byte(
    app: web.Application, choice: ObjectChoice | Redirect, started_s: float
) -> None:
    """``cadenza_first_byte_seconds``: from the request's head to its answer's."""
    prefetcher = app.get(PREFETCHER)
    if prefetcher is None:
        return
    source = FirstByteSource.PLAIN
    if isinstance(choice, ObjectChoice):
        if choice.prefetched:
            source = FirstByteSource.PREFETCHED
        elif choice.obj.provenance is Provenance.JIT_BUILT and choice.how != "hit":
            source = FirstByteSource.JIT
    histogram = prefetcher.metrics.first_byte.labels(source.value)
    app[METRICS].batch.of(histogram).observe(time.perf_counter() - started_s)


async def session_prefetch(app: web.Application, sid: str, track: str | None) -> dict[str, object]:
    """``queue`` and ``predicted_next`` of ``GET /v1/sessions/{sid}``."""
    prefetcher = app.get(PREFETCHER)
    if prefetcher is None:
        return {"queue": [], "predicted_next": []}
    predicted = await prefetcher.predictions(sid, track)
    return {
        "queue": list(prefetcher.queues.get(sid) or ()),
        "predicted_next": [p.to_dict() for p in predicted],
    }
