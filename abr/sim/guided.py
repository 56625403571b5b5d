"""What the origin's guidance can put in front of a simulated player, per player.

Only channels the pinned players read (``docs/player-models.md`` 1.5, 2.5):

* the variants a per-session manifest lists: nothing above the guidance cap
  (hls.js, dash.js; for dash.js the cap is also OperatingBandwidth ``max``);
* a start rung: hls.js ``startLevel`` as the demo page sets it from the
  origin's hint, dash.js the MPD ServiceDescription
  ``OperatingBandwidth@mediaType="audio"`` ``target`` (``initialBitrate``).

The origin gives a start hint only when it has one (:attr:`Guidance.start_hint`);
without it the player starts as it would unguided.
"""

from __future__ import annotations

from cadenza.abr.sim.session import SessionSetup


def capped_top(setup: SessionSetup, guided: bool) -> int:
    """The highest rung a client may pick: the guidance cap when guided."""
    if guided and setup.guidance is not None:
        return setup.guidance.max_index
    return len(setup.ladder_bps) - 1


def start_hint(setup: SessionSetup) -> int | None:
    """The start rung the origin hints at, or None when it gives no hint."""
    guidance = setup.guidance
    if guidance is None or not guidance.start_hint:
        return None
    return guidance.start_index
