"""The link model: a throughput trace turned into download times.

A request made at ``t`` waits one RTT (its time to first byte), then receives
bits at the trace's throughput, integrated exactly over the piecewise-constant
trace and looping it when it runs out (:func:`arrival_times_s`).  Every
request pays its round trip: the download time, request to last byte, always
includes the RTT.  What a player *measures* is its own business: hls.js and
dash.js take most or all of the first-byte time out of their throughput
samples (see ``docs/player-models.md``), so a
:class:`~cadenza.abr.sim.session.Measurement` carries both the download time
and the time to first byte.  Chunks are CBR:
``round(bitrate · segment_duration_s / 8)`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from cadenza.abr.traces import Trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class Link:
    """A trace prepared for integration: ``cum_bits[i]`` bits have arrived by ``bounds_s[i]``."""

    rtt_s: float
    period_s: float
    bounds_s: FloatArray
    rates_bps: FloatArray
    cum_bits: FloatArray

    @property
    def bits_per_period(self) -> float:
        return float(self.cum_bits[-1])


@lru_cache(maxsize=256)
def link_for(trace: Trace) -> Link:
    """The integration tables of ``trace`` (cached per trace)."""
    starts = np.asarray(trace.times_s, dtype=np.float64) - trace.times_s[0]
    bounds = np.append(starts, trace.period_s)
    rates = np.asarray(trace.throughput_bps, dtype=np.float64)
    cum = np.concatenate(([0.0], np.cumsum(rates * np.diff(bounds))))
    return Link(trace.rtt_s, trace.period_s, bounds, rates, cum)


def bits_by(link: Link, at_s: FloatArray) -> FloatArray:
    """Bits the link has delivered from time 0 to each ``at_s`` (the trace looped)."""
    laps = np.floor(at_s / link.period_s)
    within = at_s - laps * link.period_s
    last = len(link.rates_bps) - 1
    index = np.clip(np.searchsorted(link.bounds_s, within, side="right") - 1, 0, last)
    partial = link.cum_bits[index] + link.rates_bps[index] * (within - link.bounds_s[index])
    result: FloatArray = laps * link.bits_per_period + partial
    return result


def time_of_bits(link: Link, bits: FloatArray) -> FloatArray:
    """The earliest time by which the link has delivered ``bits`` (each > 0)."""
    total = link.bits_per_period
    laps = np.maximum(np.ceil(bits / total) - 1.0, 0.0)
    rest = np.clip(bits - laps * total, np.finfo(np.float64).tiny, total)
    last = len(link.rates_bps) - 1
    index = np.clip(np.searchsorted(link.cum_bits, rest, side="left") - 1, 0, last)
    rate = link.rates_bps[index]
    safe_rate = np.where(rate > 0, rate, 1.0)
    offset = np.where(rate > 0, (rest - link.cum_bits[index]) / safe_rate, 0.0)
    result: FloatArray = laps * link.period_s + link.bounds_s[index] + offset
    return result


def arrival_times_s(link: Link, request_s: FloatArray, size_bytes: float) -> FloatArray:
    """When a ``size_bytes`` object requested at each ``request_s`` has fully arrived.

    One RTT passes before the first bit; then the object takes the trace's
    throughput from that moment on.  Later requests never arrive earlier.
    """
    first_bit_s = request_s + link.rtt_s
    done = time_of_bits(link, bits_by(link, first_bit_s) + 8.0 * size_bytes)
    result: FloatArray = np.maximum(done, first_bit_s)
    return result


def bytes_loaded(link: Link, request_s: float, at_s: FloatArray, size_bytes: float) -> FloatArray:
    """Bytes of a ``size_bytes`` object requested at ``request_s`` arrived by each ``at_s``."""
    first_bit_s = request_s + link.rtt_s
    start_bits = float(bits_by(link, np.array([first_bit_s], dtype=np.float64))[0])
    later = np.maximum(at_s, first_bit_s)
    result: FloatArray = np.clip((bits_by(link, later) - start_bits) / 8.0, 0.0, size_bytes)
    return result


def download_time_s(trace: Trace, request_s: float, size_bytes: float) -> float:
    """Seconds from request to last byte for one object requested at ``request_s``."""
    link = link_for(trace)
    arrival = arrival_times_s(link, np.array([request_s], dtype=np.float64), size_bytes)
    return float(arrival[0]) - request_s


def chunk_size_bytes(bitrate_bps: float, segment_duration_s: float) -> int:
    """Bytes of one CBR chunk."""
    return round(bitrate_bps * segment_duration_s / 8.0)
