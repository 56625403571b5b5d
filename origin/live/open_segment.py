"""The open segment of a live rendition (named in ``live.json``, its whole file
not written yet), streamed with chunked transfer coding (RFC 9112 7.1) as its
parts appear, so a low-latency DASH player (``availabilityTimeComplete="false"``)
gets each CMAF chunk as soon as it exists.

One :class:`SegmentFeed` per open segment reads each part file once, in order,
into a shared list; every client of that segment is fed from it (a late joiner
gets what is there at once, then follows).  The parts' bytes end to end are the
whole segment file, byte for byte (``manifests/live.py``).  A feed ends when
the segment is complete; it is aborted when no new part appears for three
target durations (the blocking timeout of RFC 8216bis 6.2.5.2, applied here
too) or when the segment leaves the window: a client then sees the connection
closed before the last chunk (no terminating zero-length chunk), which no cache
stores and every player treats as a failed download.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cadenza.manifests.live import LivePart, LivePresentation, LiveSegment
from cadenza.origin.errors import OriginError
from cadenza.origin.live.watch import LiveWatch
from cadenza.origin.storage import Storage

log = logging.getLogger(__name__)


def find_segment(model: LivePresentation, rendition_id: str, number: int) -> LiveSegment | None:
    try:
        rendition = model.rendition(rendition_id)
    except KeyError:
        return None
    for segment in rendition.segments:
        if segment.number == number:
            return segment
    return None


class SegmentFeed:
    """The bytes of one open segment so far, and an event per new chunk."""

    def __init__(
        self,
        watch: LiveWatch,
        storage: Storage,
        rendition_id: str,
        number: int,
        *,
        timeout_s: float,
        on_end: Callable[[SegmentFeed], None],
    ) -> None:
        self.watch = watch
        self.rendition_id = rendition_id
        self.number = number
        self.chunks: list[bytes] = []
        self.done = False  # every part is in ``chunks``
        self.aborted = False
        self._storage = storage
        self._timeout_s = timeout_s
        self._on_end = on_end
        self._grew = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._produce())

    @property
    def key(self) -> tuple[str, str, int]:
        return self.watch.track, self.rendition_id, self.number

    def _part_key(self, part: LivePart) -> str:
        return f"{self.watch.track}/{self.rendition_id}/{part.name(self.number)}"

    def _signal(self) -> None:
        grew, self._grew = self._grew, asyncio.Event()
        grew.set()

    async def _produce(self) -> None:
        try:
            while True:
                segment = find_segment(self.watch.model, self.rendition_id, self.number)
                if segment is None:
                    self.aborted = True
                    return
                while len(self.chunks) < len(segment.parts):
                    part = segment.parts[len(self.chunks)]
                    stored = await self._storage.read(self._part_key(part))
                    self.chunks.append(stored.body)
                    self._signal()
                if segment.complete:
                    self.done = True
                    return
                if not await self.watch.wait_change(self._timeout_s, request=False):
                    self.aborted = True
                    return
        except OriginError as exc:  # a part named but unreadable (removed, storage down)
            log.warning("open segment %s: %s", self.key, exc)
            self.aborted = True
        finally:
            self._signal()
            self._on_end(self)

    async def follow(self, start: int) -> list[bytes] | None:
        """The chunks from index ``start`` on, waiting for at least one when there
        are none yet; an empty list when the segment is done, None when aborted."""
        while len(self.chunks) <= start:
            if self.done:
                return []
            if self.aborted:
                return None
            await self._grew.wait()
        return self.chunks[start:]

    def cancel(self) -> None:
        self._task.cancel()


class SegmentFeeds:
    """The feeds of this process's open segments, one per segment."""

    def __init__(self, storage: Callable[[], Storage]) -> None:
        self._storage = storage
        self._feeds: dict[tuple[str, str, int], SegmentFeed] = {}

    def feed(
        self, watch: LiveWatch, rendition_id: str, number: int, timeout_s: float
    ) -> SegmentFeed:
        key = (watch.track, rendition_id, number)
        found = self._feeds.get(key)
        if found is not None:
            return found
        made = SegmentFeed(
            watch,
            self._storage(),
            rendition_id,
            number,
            timeout_s=timeout_s,
            on_end=self._ended,
        )
        self._feeds[key] = made
        return made

    def _ended(self, feed: SegmentFeed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    def close(self) -> None:
        for feed in list(self._feeds.values()):
            with contextlib.suppress(RuntimeError):
                feed.cancel()
