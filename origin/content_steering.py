"""Content steering: the standard way to spread players over several CDNs.

With pathways configured (``cadenza.origin.pathways``), the manifests name every
pathway and a steering server (``cadenza.manifests.steering``), and this module is
that server:

- ``GET /v1/steering/{track}`` answers the steering manifest hls.js and
  dash.js poll (HLS Content Steering 1.2 / DASH-IF content steering):
  ``{"VERSION": 1, "TTL": s, "RELOAD-URI": ..., "PATHWAY-PRIORITY": [...]}``
  plus ``PATHWAY-CLONES`` when clones are configured.  It reads the player's
  current pathway and throughput from ``_HLS_pathway``/``_HLS_throughput``
  or ``_DASH_pathway``/``_DASH_throughput``; malformed or unknown values are
  ignored and counted (``cadenza_steering_malformed_args_total``).
- The priority is :func:`~cadenza.origin.steering_policy.rank_pathways`, a pure
  function of the configured weights, the pathways' health and what the player
  reported (:func:`~cadenza.origin.steering_policy.parse_steering_query`).
- Health comes from probes (:mod:`cadenza.origin.pathway_health`).
- ``GET /v1/pathways`` reports the pathways, their health and the priority a
  new player would get, for operators and tests.
- :func:`steering_config` is the steering block of a track's manifests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote

from aiohttp import web

from cadenza.manifests.steering import InvalidSteeringError, Pathway, SteeringConfig
from cadenza.origin.auth import TOKEN_PREFIX
from cadenza.origin.errors import BadRequestError, ObjectNotFoundError
from cadenza.origin.keys import METRICS, SETTINGS
from cadenza.origin.pathway_health import PATHWAY_MONITOR, PathwayMonitor, targets_of
from cadenza.origin.settings import Settings
from cadenza.origin.steering_policy import (
    Health,
    SteeringQuery,
    Weighted,
    parse_steering_query,
    rank_pathways,
)

STEERING_VERSION: Final = 1
_TRACK_RE: Final = re.compile(r"\A[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\Z")
PLAYER_ARG_PREFIXES: Final = ("_HLS_", "_DASH_")


def _default_pathway(settings: Settings) -> str:
    ids = [p.id for p in settings.pathways]
    default = settings.content_steering_default
    return default if default in ids else ids[0]


def _ranked(
    settings: Settings,
    monitor: PathwayMonitor | None,
    query: SteeringQuery | None,
    *,
    clones: bool,
) -> list[str]:
    targets: list[Weighted] = list(targets_of(settings) if clones else settings.pathways)
    if monitor is None:
        health: dict[str, Health] = {}
        now_s = 0.0
    else:
        health, now_s = monitor.health(), monitor.now_s()
    current = query.current if query is not None else _default_pathway(settings)
    return rank_pathways(
        targets,
        health,
        current,
        query.throughput_bps if query is not None else {},
        now_s,
        recover_hold_s=settings.pathway_recover_hold_s,
    )


def steering_config(
    settings: Settings,
    monitor: PathwayMonitor | None,
    track: str,
    protocol: str,
    *,
    origin_url: str,
    token: str | None,
) -> SteeringConfig | None:
    """The steering block of a track's manifests, or ``None`` without pathways.

    Players start on the best pathway for a newcomer (the configured default
    unless the probes say otherwise).  The server URI is absolute, on
    ``content_steering_url`` or else on ``origin_url`` (``scheme://host`` the
    manifest was asked of).  ``token`` is the signed-URL token of the manifest's
    path, as the caller already parsed it (``None``: not a signed URL); a signed
    manifest's pathway URIs carry it, as relative URIs would."""
    if not settings.pathways:
        return None
    base = settings.content_steering_url or origin_url
    server_uri = f"{base.rstrip('/')}/v1/steering/{quote(track, safe='')}?protocol={protocol}"
    default = _ranked(settings, monitor, None, clones=False)[0]
    signed = f"{TOKEN_PREFIX}{token}" if token else ""
    try:
        return SteeringConfig(
            server_uri=server_uri,
            pathways=tuple(
                Pathway(p.id, p.base_url.rstrip("/") + signed) for p in settings.pathways
            ),
            default=default,
            query_before_start=settings.content_steering_query_before_start,
        )
    except InvalidSteeringError as exc:  # a Host header no URI can carry
        raise BadRequestError(f"cannot name the steering server: {exc}") from exc


def steering_manifest(
    settings: Settings, ranked: Sequence[str], reload_uri: str
) -> dict[str, object]:
    """The JSON players read (HLS Content Steering / DASH-IF DCSM, version 1)."""
    body: dict[str, object] = {
        "VERSION": STEERING_VERSION,
        "TTL": settings.content_steering_ttl_s,
        "RELOAD-URI": reload_uri,
        "PATHWAY-PRIORITY": list(ranked),
    }
    if settings.pathway_clones:
        clones = []
        for clone in settings.pathway_clones:
            replacement: dict[str, object] = {"HOST": clone.host}
            if clone.params:
                replacement["PARAMS"] = dict(clone.params)
            clones.append(
                {"BASE-ID": clone.base_id, "ID": clone.id, "URI-REPLACEMENT": replacement}
            )
        body["PATHWAY-CLONES"] = clones
    return body


def _not_configured() -> ObjectNotFoundError:
    return ObjectNotFoundError("content steering is not configured on this origin (no pathways)")


async def handle_steering(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    track = request.match_info["track"]
    if not _TRACK_RE.match(track):
        raise BadRequestError("not a track id")
    if not settings.pathways:
        raise _not_configured()
    query = {key: value for key, value in request.query.items()}  # the last of repeated keys
    known = {t.id for t in targets_of(settings)}
    parsed = parse_steering_query(query, known, protocol_hint=query.get("protocol"))
    for arg in parsed.malformed:
        metrics.steering_malformed.labels(arg).inc()
    ranked = _ranked(settings, request.app.get(PATHWAY_MONITOR), parsed, clones=True)
    # Players add their own _HLS_/_DASH_ arguments to the RELOAD-URI: drop the old ones.
    kept = [(k, v) for k, v in request.query.items() if not k.startswith(PLAYER_ARG_PREFIXES)]
    reload_uri = str(request.rel_url.with_query(kept))
    metrics.steering_responses.labels(parsed.protocol, ranked[0]).inc()
    return web.json_response(
        steering_manifest(settings, ranked, reload_uri),
        headers={"Cache-Control": "no-store"},
    )


async def handle_pathways(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.pathways:
        raise _not_configured()
    monitor = request.app.get(PATHWAY_MONITOR)
    rows = monitor.report() if monitor is not None else []
    body = {
        "default": _default_pathway(settings),
        "priority": _ranked(settings, monitor, None, clones=True),
        "pathways": rows,
        "health_interval_s": settings.pathway_health_interval_s,
        "ttl_s": settings.content_steering_ttl_s,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})
