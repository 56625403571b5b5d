"""The JSON API over live sessions, for operators: ``GET /v1/sessions``,
``GET /v1/sessions/{sid}`` and ``GET /v1/ladder/recommendation``."""

from __future__ import annotations

import asyncio
import functools
from typing import Final

from aiohttp import web

from cadenza.abr.ladder import recommend_ladder, render_ladder_toml, traces_from_estimates
from cadenza.abr.session import SessionState, valid_sid
from cadenza.manifests.ladder import MAX_RUNGS
from cadenza.manifests.model import Codec
from cadenza.origin.errors import BadBeaconError, NotEnoughDataError, SessionNotFoundError
from cadenza.origin.keys import POPULATION, PRESENTATIONS, SESSIONS
from cadenza.origin.prefetch.hooks import session_prefetch
from cadenza.origin.telemetry import guidance_for

LADDER_MAX_SESSIONS: Final = 10_000
MIN_SESSIONS_FOR_LADDER: Final = 5


async def _report(app: web.Application, state: SessionState) -> dict[str, object]:
    report = state.to_dict()
    parsed = app[PRESENTATIONS].get(state.track) if state.track else None
    if parsed is not None:
        guidance = await guidance_for(app, parsed[1], state, state.network_key)
        report["recommended_max_bitrate_kbps"] = guidance.max_bitrate_bps // 1000
        report["guidance"] = guidance.to_dict()
    else:
        report["recommended_max_bitrate_kbps"] = None
        report["guidance"] = None
    report.update(await session_prefetch(app, state.sid, state.track))  # queue, predicted_next
    return report


async def handle_session(request: web.Request) -> web.Response:
    sid = request.match_info["sid"]
    state = await request.app[SESSIONS].get(sid) if valid_sid(sid) else None
    if state is None:
        raise SessionNotFoundError(f"no active session {sid[:64]!r}")
    return web.json_response(
        await _report(request.app, state), headers={"Cache-Control": "no-store"}
    )


def _small_number(text: str) -> bool:
    """ASCII digits only, and few of them: ``str.isdigit`` is also true for '²'
    (which ``int`` refuses), and ``int`` refuses more than 4300 digits."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


async def handle_sessions(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit", "100")
    if not _small_number(raw_limit) or not 0 < int(raw_limit) <= 10_000:
        raise BadBeaconError(f"limit={raw_limit[:20]!r}: expected 1..10000")
    states = await request.app[SESSIONS].active()
    states.sort(key=lambda s: s.last_seen_s, reverse=True)
    estimates = [s.estimate_kbps for s in states if s.estimate_kbps is not None]
    summary = {
        "active": len(states),
        "with_throughput": len(estimates),
        "median_throughput_kbps": (
            round(sorted(estimates)[len(estimates) // 2], 1) if estimates else None
        ),
        "stalls": sum(s.stalls for s in states),
        "switches": sum(s.switches for s in states),
    }
    sessions = [
        {
            "sid": s.sid,
            "cid": s.cid,
            "track": s.track,
            "last_seen_s": round(s.last_seen_s, 3),
            "throughput_estimate_kbps": (
                round(s.estimate_kbps, 1) if s.estimate_kbps is not None else None
            ),
            "last_bl_ms": s.last_bl_ms,
            "last_br_kbps": s.last_br_kbps,
            "switches": s.switches,
            "stalls": s.stalls,
        }
        for s in states[: int(raw_limit)]
    ]
    return web.json_response(
        {"summary": summary, "sessions": sessions}, headers={"Cache-Control": "no-store"}
    )


async def handle_ladder_recommendation(request: web.Request) -> web.Response:
    """``GET /v1/ladder/recommendation?codec=aac&max_rungs=4``: the ladder the live
    sessions' throughput asks for (the same search as ``cadenza ladder recommend``)."""
    codec_text = request.query.get("codec", "aac")
    if codec_text not in ("aac", "opus"):
        raise BadBeaconError(f"codec={codec_text[:20]!r}: expected aac or opus")
    rungs_text = request.query.get("max_rungs", "4")
    if not _small_number(rungs_text) or not 1 <= int(rungs_text) <= MAX_RUNGS:
        raise BadBeaconError(f"max_rungs={rungs_text[:20]!r}: expected 1..{MAX_RUNGS}")
    estimates = await request.app[POPULATION].samples()
    if len(estimates) < MIN_SESSIONS_FOR_LADDER:
        raise NotEnoughDataError(
            f"{len(estimates)} sessions with a throughput so far; "
            f"a recommendation needs at least {MIN_SESSIONS_FOR_LADDER}"
        )
    traces = traces_from_estimates(estimates[:LADDER_MAX_SESSIONS])
    # CPU-bound (hundreds of simulated sessions): keep it off the event loop.
    recommendation = await asyncio.get_running_loop().run_in_executor(
        None,
        functools.partial(
            recommend_ladder, traces, codec=Codec(codec_text), max_rungs=int(rungs_text)
        ),
    )
    body = recommendation.to_dict()
    body["sessions"] = len(estimates)
    body["ladder_toml"] = render_ladder_toml(recommendation)
    return web.json_response(body, headers={"Cache-Control": "no-store"})
