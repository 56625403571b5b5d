"""When tick 0 of a live stream was captured: the wall-clock instant that
``availability_start_ms`` (EXT-X-PROGRAM-DATE-TIME, the MPD's
``availabilityStartTime``) states, worked out from the input's arrivals.

The block that arrives first does not start the stream: FFmpeg's probe of a stream,
or a server's burst on connect (Icecast sends seconds of audio at once), hands over
audio captured earlier, and dating tick 0 by the first arrival would put every later
sample that far ahead of its real capture.  Tick 0 is the earliest (arrival - audio
received so far) while the stream is not dated yet; it is dated (settled) once
arrivals have kept pace with real time for a part (the burst is over), after
:data:`SETTLE_MAX_S` whatever the input does, or at once for an input read as fast as
it decodes (a file without ``--realtime``, whose timeline runs ahead for good).  A
burst after that is reported, not followed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from cadenza.packager.live.grid import LIVE_RATE_HZ
from cadenza.packager.live.publisher import Publisher

log = logging.getLogger(__name__)

JITTER_S: Final = 0.001  # arrivals earlier than this move tick 0
SETTLE_MAX_S: Final = 2.0  # dated at the latest this long after the first block


class StartAnchor:
    """Tick 0's instant for one ingest, moved through ``publisher`` until it is dated."""

    def __init__(
        self,
        publisher: Publisher,
        clock: Callable[[], float],
        part_ticks: int,
        *,
        paced: bool,
    ) -> None:
        self._publisher = publisher
        self._clock = clock
        self._part_s = part_ticks / LIVE_RATE_HZ
        self._paced = paced
        self.start_s = publisher.availability_start_ms / 1000
        self._first_arrival_s: float | None = None
        self._lowered_s = self.start_s  # when start_s last moved earlier
        self._warned = False

    def note_arrival(self, arrived_s: float, position_ticks: int) -> None:
        """Input (not a stall's silence) arrived at ``arrived_s``, ``position_ticks``
        fed in all with it."""
        start_s = arrived_s - position_ticks / LIVE_RATE_HZ
        ahead_s = self.start_s - start_s
        now_s = self._clock()
        if self._first_arrival_s is None:
            self._first_arrival_s = arrived_s
        if ahead_s > JITTER_S and self._publisher.anchor(start_s):
            self.start_s = start_s
            self._lowered_s = now_s
        elif ahead_s > self._part_s and not self._warned:
            self._warned = True
            log.warning(
                "%s: the input ran %.2f s ahead of real time after the stream started "
                "(a burst?): its timeline and program date-times are that far ahead",
                self._publisher.track_id,
                ahead_s,
            )
        if (
            not self._paced
            or now_s - self._lowered_s >= self._part_s
            or now_s - self._first_arrival_s >= SETTLE_MAX_S
        ):
            self._publisher.settle()

    def settle(self) -> None:
        """Date it now (the input stalled: no burst is running)."""
        self._publisher.settle()
