"""Predictive prefetch: have what a session plays next hot before it is asked for.

- :mod:`.plan` (pure): which tracks come next and with what probability (a
  stated queue, then learned transitions), which rung the session will likely
  play there, which objects to warm, and whether a CMCD ``nor`` may be warmed;
- :mod:`.transitions`: next-track counts per track (memory; Redis in
  :mod:`cadenza.origin.redis_transitions`);
- :mod:`.engine`: the background work (a bounded queue of events, one of warms,
  the budgets; what it keeps per session: :mod:`.state`); what the request path
  calls: :mod:`.hooks`, and ``POST /v1/beacons``: :mod:`.beacon_nor`;
- :mod:`.ledger`: which warmed objects were used, which wasted;
- :mod:`.queue_api`: ``POST /v1/sessions/{sid}/queue``;
- :mod:`.metrics`: ``cadenza_prefetch_*`` and ``cadenza_first_byte_seconds``.

See docs/operating.md, "Prefetch".
"""
