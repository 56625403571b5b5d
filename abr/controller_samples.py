"""What one request tells the origin controller about the player's link: the
throughput sample of the previous object, or none.

The sources, best first: the TCP delivery rate of the previous response (when the
origin served it on this connection), the player's CMCD ``mtp`` (CTA-5004: measured
throughput, rounded to 100 kb/s), and, as a lower bound on either, the previous
object's size over the time between the session's two requests (a player asks for
the next object once the last one arrived).  Each is checked against the others
where one can be wrong:

- the socket measures the hop to its peer, which is the player's link only when
  nothing past the socket slows the bytes (a browser's throttling, a proxy the
  origin was not told of): a delivery rate far over what the player measured
  (``mtp``), or over the rate of an arrival the player waited for, is dropped;
- a gap of most of a segment is a player pacing its full buffer, and measures
  nothing, unless the player's ``bl`` says it was waiting (a buffer under
  ``waiting_segments`` segments): then the gap timed the arrival (Shaka 5.2.12 sent
  no ``mtp`` in the browser tests, and on a slow link this is all the origin learns);
- no sample counts for more than ``over_top`` times the ladder's top rung: above
  that any of them carries the top rung, and one outlier (a LAN burst, a loopback
  socket) would hold the session's level up for minutes.

Pure: every input is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cadenza.abr.controller_inputs import MTP_STEP_KBPS, MTP_ZERO_KBPS, Signals
from cadenza.abr.controller_table import NO_PREVIOUS


@dataclass(frozen=True, slots=True)
class SampleRules:
    # Without a measurement, a gap this share of a segment or longer is the player
    # pacing a full buffer, not a download: it gives no sample.
    paced_gap_fraction: float = 0.9
    # A player reporting less buffer than this many segments is waiting, not pacing.
    waiting_segments: float = 1.5
    # The delivery rate is dropped over this multiple of the top of mtp's interval or of
    # an awaited arrival's rate (0: always believed).  1.5 never binds in the simulator,
    # where both measure one link; 1.0 cost the 3g set 0.8 point.
    delivery_over_seen: float = 1.5
    # The ceiling of every sample, times the top rung (0: none).
    over_top: float = 4.0


DEFAULT_SAMPLE_RULES: Final = SampleRules()


def waiting(
    buffer_ms: int | None, object_duration_s: float, rules: SampleRules = DEFAULT_SAMPLE_RULES
) -> bool:
    """Whether a player reporting ``buffer_ms`` (CMCD ``bl``) was waiting for the object it
    just got rather than pacing a full buffer: under ``waiting_segments`` objects left."""
    return buffer_ms is not None and buffer_ms < rules.waiting_segments * object_duration_s * 1e3


def believed_delivery_bps(
    delivery_bps: float | None,
    measured_kbps: int | None,
    awaited_bps: float | None,
    rules: SampleRules = DEFAULT_SAMPLE_RULES,
) -> float | None:
    """The socket's delivery rate when it can be the player's link, else None.

    What the player saw bounds it: the top of the interval its ``mtp`` was rounded
    from, or without ``mtp`` the rate of an arrival it waited for (``awaited_bps``,
    the previous object's size over the time between the requests; None when the
    player was not waiting).  A rate over ``delivery_over_seen`` times that measured a
    hop the player's bytes did not slow on (a browser's throttling, a proxy).  The
    controller's samples and the ``etp`` the origin reports both take the rate from
    here."""
    if delivery_bps is None or not delivery_bps > 0:
        return None
    seen_bps = (measured_kbps + MTP_STEP_KBPS / 2) * 1e3 if measured_kbps is not None else None
    if seen_bps is None:
        seen_bps = awaited_bps
    over = rules.delivery_over_seen
    if seen_bps is not None and 0 < over * seen_bps < delivery_bps:
        return None
    return delivery_bps


def link_sample_bps(
    ladder_bps: Sequence[int],
    previous: int,
    signals: Signals,
    gap_s: float | None,
    segment_duration_s: float,
    rules: SampleRules = DEFAULT_SAMPLE_RULES,
) -> float | None:
    """The previous object's throughput (bit/s), or None when nothing measured it.
    ``previous``: the rung the session was last served (``NO_PREVIOUS`` when unknown);
    ``gap_s``: the time since the session's previous request (None for its first)."""
    bound: float | None = None
    encoded_kbps = signals.encoded_kbps
    duration_s = signals.object_ms / 1000.0 if signals.object_ms else segment_duration_s
    if gap_s is not None and gap_s > 0 and (previous != NO_PREVIOUS or encoded_kbps):
        bitrate = encoded_kbps * 1000.0 if encoded_kbps else ladder_bps[previous]
        bound = bitrate * duration_s / gap_s
    waited = waiting(signals.buffer_ms, duration_s, rules)
    mtp_kbps = signals.measured_kbps
    delivery_bps = believed_delivery_bps(
        signals.delivery_rate_bps, mtp_kbps, bound if waited else None, rules
    )
    measured: float | None = None
    if delivery_bps is not None:  # believed: positive
        measured = delivery_bps
    elif mtp_kbps is not None:
        # The low end of the interval ``mtp`` was rounded from (25 kb/s for a 0).
        measured = max(mtp_kbps - MTP_STEP_KBPS / 2, MTP_ZERO_KBPS) * 1000.0
    if measured is not None:
        sample: float | None = max(measured, bound or 0.0)
    else:
        paced = gap_s is None or gap_s >= rules.paced_gap_fraction * segment_duration_s
        sample = None if paced and not waited else bound
    if sample is not None and rules.over_top > 0 and ladder_bps:
        sample = min(sample, rules.over_top * ladder_bps[-1])
    return sample
