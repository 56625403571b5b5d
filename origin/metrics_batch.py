"""Histogram observations and counter increments applied once per event-loop turn.

``Histogram.observe`` takes a lock twice and walks the buckets for every
value, a few microseconds that a decided segment paid four times.  A
:class:`BatchedHistogram` queues its values and applies them together after
the current event-loop turn (:meth:`ObservationBatch.flush`): the count of
each bucket grows by the number of values it got, and the sum by each value
in the order observed, so the series are what ``observe`` would have made of
the same values, bit for bit.  ``/metrics`` flushes before it renders, so a
scrape sees every observation made before it; outside an event loop a value
is observed at once.

A :class:`BatchedCounter` does the same for a counter (or a labelled child):
each ``Counter.inc`` takes a lock (and with ``--workers`` writes a
memory-mapped file), and a decided segment counted five of them.  The
increments of a turn are added up and applied as one; the counters count
whole numbers (requests, bytes), whose sums are exact in a float up to 2**53,
so the series is what the separate increments would have made of it."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any, Protocol

from prometheus_client import Counter, Histogram


class _Queued(Protocol):
    def apply(self) -> None: ...


class ObservationBatch:
    """The metrics (histograms and counters) with values queued, and the one flush
    scheduled for them."""

    def __init__(self) -> None:
        self._queued: list[_Queued] = []
        self._batched: dict[int, BatchedHistogram] = {}
        self._counted: dict[int, BatchedCounter] = {}
        # The loop the flush is scheduled on (another loop schedules its own: one
        # that closed before its flush ran leaves nothing behind).
        self._flushing_on: asyncio.AbstractEventLoop | None = None

    def of(self, histogram: Histogram) -> BatchedHistogram:
        """``histogram`` (unlabelled, or a labelled child) batched, one per histogram
        (its values queued in the order observed)."""
        batched = self._batched.get(id(histogram))
        if batched is None:
            batched = self._batched[id(histogram)] = BatchedHistogram(histogram, self)
        return batched

    def counted(self, counter: Counter) -> BatchedCounter:
        """``counter`` (unlabelled, or a labelled child) batched, one per counter."""
        batched = self._counted.get(id(counter))
        if batched is None:
            batched = self._counted[id(counter)] = BatchedCounter(counter, self)
        return batched

    def queue(self, metric: _Queued) -> bool:
        """Queue ``metric``'s pending values (a histogram's observations or a counter's
        increments) for the end of this loop turn; False when no event loop runs (the
        caller applies at once)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._flushing_on is not loop:
            loop.call_soon(self.flush)
            self._flushing_on = loop
        self._queued.append(metric)
        return True

    def flush(self) -> None:
        """Apply every queued value."""
        self._flushing_on = None
        queued, self._queued = self._queued, []
        for metric in queued:
            metric.apply()


class BatchedHistogram:
    """One histogram (or labelled child) whose values go through ``batch``."""

    __slots__ = ("_amounts", "_batch", "_bounds", "_buckets", "_sum", "histogram")

    def __init__(self, histogram: Histogram, batch: ObservationBatch) -> None:
        self.histogram = histogram
        self._batch = batch
        self._amounts: list[float] = []
        # The values prometheus_client keeps a histogram in; without them (another
        # version of it), every value is observed on its own.
        parts: tuple[Any, Any, Any] | None = None
        try:
            parts = (histogram._sum, list(histogram._buckets), list(histogram._upper_bounds))
        except AttributeError:
            parts = None
        if parts is None or len(parts[1]) != len(parts[2]):
            self._sum: Any = None
            self._buckets: list[Any] = []
            self._bounds: list[float] = []
        else:
            self._sum, self._buckets, self._bounds = parts

    def observe(self, amount: float) -> None:
        amounts = self._amounts
        if amounts or (self._sum is not None and self._batch.queue(self)):
            amounts.append(amount)
        else:
            self.histogram.observe(amount)

    def apply(self) -> None:
        """Apply the queued values as ``observe`` would, one by one."""
        amounts, self._amounts = self._amounts, []
        if not amounts:
            return
        bounds = self._bounds
        counts = [0] * len(bounds)
        total = self._sum.get()
        for amount in amounts:
            total += amount
            # observe() counts a value in the first bucket whose bound is >= it
            # (+Inf is the last bound), and a NaN in none.
            if amount == amount:
                counts[bisect_left(bounds, amount)] += 1
        self._sum.set(total)
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


class BatchedCounter:
    """One counter (or labelled child) whose increments go through ``batch``."""

    __slots__ = ("_amount", "_batch", "counter")

    def __init__(self, counter: Counter, batch: ObservationBatch) -> None:
        self.counter = counter
        self._batch = batch
        self._amount = 0.0  # queued, not yet applied (0: not queued)

    def inc(self, amount: float = 1) -> None:
        if amount < 0:  # as Counter.inc refuses it, at once
            raise ValueError(f"Counters can only be incremented by non-negative amounts: {amount}")
        if self._amount:
            self._amount += amount
        elif amount and self._batch.queue(self):
            self._amount = amount
        else:
            self.counter.inc(amount)

    def apply(self) -> None:
        amount, self._amount = self._amount, 0.0
        if amount:
            self.counter.inc(amount)
