"""The players the origin's guidance is for, at chunk level: hls.js, dash.js, Shaka.

Each follows its pinned source (``docs/player-models.md``):
:class:`~cadenza.abr.sim.hlsjs.HlsJs` (hls.js 1.7.4),
:class:`~cadenza.abr.sim.dashjs.DashJsDynamic` (dash.js 5.2.1) and
:class:`~cadenza.abr.sim.shaka.Shaka` (Shaka Player 5.2.12).  hls.js and
dash.js may run guided (``hlsjs+cadenza``, ``dashjs+cadenza``) and then read
only what the player really reads (:mod:`cadenza.abr.sim.guided`).
"""

from __future__ import annotations

from cadenza.abr.sim.bola import BolaParams, bola_choice, bola_params
from cadenza.abr.sim.dashjs import DashJsDynamic, DashJsState
from cadenza.abr.sim.guided import capped_top, start_hint
from cadenza.abr.sim.hlsjs import HlsJs, HlsJsState
from cadenza.abr.sim.shaka import Shaka, ShakaState

__all__ = [
    "BolaParams",
    "DashJsDynamic",
    "DashJsState",
    "HlsJs",
    "HlsJsState",
    "Shaka",
    "ShakaState",
    "bola_choice",
    "bola_params",
    "capped_top",
    "start_hint",
]
