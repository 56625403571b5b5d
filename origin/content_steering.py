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
- The priority is :func:`rank_pathways`, a pure function of the configured
  weights, the pathways' health and what the player reported.
- Health: a background task probes ``base_url + pathway_health_path`` of
  every pathway (and clone) every ``pathway_health_interval_s``; a pathway is
  down after ``pathway_health_failures`` failed probes in a row and up again
  after one success (``cadenza_pathway_up{pathway}``).
- ``GET /v1/pathways`` reports the pathways, their health and the priority a
  new player would get, for operators and tests.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

import aiohttp
from aiohttp import web

from cadenza.manifests.steering import InvalidSteeringError, Pathway, SteeringConfig
from cadenza.origin.auth import TOKEN_PREFIX, split_token_path
from cadenza.origin.errors import BadRequestError, ObjectNotFoundError
from cadenza.origin.keys import METRICS, SETTINGS
from cadenza.origin.metrics import Metrics
from cadenza.origin.pathways import clone_base_url
from cadenza.origin.settings import Settings

log = logging.getLogger("cadenza.origin.content_steering")

STEERING_VERSION: Final = 1
MAX_ARG_CHARS: Final = 1024
MAX_THROUGHPUT_BPS: Final = 10**12
_TRACK_RE: Final = re.compile(r"\A[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\Z")
PLAYER_ARG_PREFIXES: Final = ("_HLS_", "_DASH_")


class Weighted(Protocol):
    """A pathway or a pathway clone, as ranking sees it."""

    @property
    def id(self) -> str: ...

    @property
    def weight(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Health:
    """What the probes say of one pathway: ``up``, and when it last came back up
    after being down (``None``: never went down), in monotonic seconds."""

    up: bool
    recovered_at: float | None = None


def rank_pathways(
    pathways: Sequence[Weighted],
    health: Mapping[str, Health],
    current: str | None,
    throughput_bps: Mapping[str, int],
    now: float,
    *,
    recover_hold_s: float = 0.0,
) -> list[str]:
    """The ``PATHWAY-PRIORITY`` for one player, best first.

    1. Healthy pathways first, unhealthy ones last.  A pathway without a probe
       result yet counts as healthy.
    2. A pathway that came back up less than ``recover_hold_s`` ago ranks after
       every steady healthy one (but before the unhealthy ones), unless the
       player is on it: a flapping CDN does not pull players back and forth.
    3. Within a tier, higher weight first.
    4. Among equal weights, the player's current pathway first (so it does not
       switch for nothing), then the higher throughput the player reported on
       a pathway (DASH reports one per pathway it used), then the configured order.
    """

    def key(item: tuple[int, Weighted]) -> tuple[int, int, int, int, int]:
        index, pathway = item
        state = health.get(pathway.id)
        is_current = pathway.id == current
        if state is not None and not state.up:
            tier = 2
        elif (
            state is not None
            and state.recovered_at is not None
            and now - state.recovered_at < recover_hold_s
            and not is_current
        ):
            tier = 1
        else:
            tier = 0
        return (
            tier,
            -pathway.weight,
            0 if is_current else 1,
            -throughput_bps.get(pathway.id, 0),
            index,
        )

    return [pathway.id for _, pathway in sorted(enumerate(pathways), key=key)]


# -- the player's query arguments -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SteeringQuery:
    """What a steering request says about the player."""

    protocol: str  # "hls", "dash" or "unknown"
    current: str | None
    throughput_bps: dict[str, int]
    malformed: tuple[str, ...]  # "pathway" / "throughput", once per bad value


def _throughput(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_THROUGHPUT_BPS else None


def parse_steering_query(
    query: Mapping[str, str], known: Collection[str], *, protocol_hint: str | None = None
) -> SteeringQuery:
    """Read ``_HLS_pathway`` (one id; hls.js sends ``.`` before it knows one)
    with ``_HLS_throughput`` (bits/s), or ``_DASH_pathway`` (a quoted,
    comma-separated list of the service locations used since the last request,
    the last one taken as current) with ``_DASH_throughput`` (bits/s for each
    of them, possibly empty).  Whatever does not parse, or names a pathway that
    is not configured, is left out and listed in ``malformed``."""
    malformed: list[str] = []
    throughput: dict[str, int] = {}
    current: str | None = None
    protocol = protocol_hint if protocol_hint in ("hls", "dash") else "unknown"
    hls_pathway = query.get("_HLS_pathway")
    hls_throughput = query.get("_HLS_throughput")
    dash_pathway = query.get("_DASH_pathway")
    dash_throughput = query.get("_DASH_throughput")
    if hls_pathway is not None or hls_throughput is not None:
        protocol = "hls"
        if hls_pathway is not None and hls_pathway != ".":
            if len(hls_pathway) <= MAX_ARG_CHARS and hls_pathway in known:
                current = hls_pathway
            else:
                malformed.append("pathway")
        if hls_throughput is not None:
            value = _throughput(hls_throughput) if len(hls_throughput) <= 32 else None
            if value is None:
                malformed.append("throughput")
            elif current is not None:
                throughput[current] = value
    elif dash_pathway is not None or dash_throughput is not None:
        protocol = "dash"
        entries: list[str | None] = []
        if dash_pathway is not None:
            if len(dash_pathway) > MAX_ARG_CHARS:
                malformed.append("pathway")
            else:
                for raw in dash_pathway.strip().strip('"').split(","):
                    name = raw.strip().strip('"')
                    if not name:
                        entries.append(None)
                    elif name in known:
                        entries.append(name)
                        current = name
                    else:
                        entries.append(None)
                        malformed.append("pathway")
        if dash_throughput is not None and len(dash_throughput) <= MAX_ARG_CHARS:
            for index, raw in enumerate(dash_throughput.split(",")):
                if not raw.strip():
                    continue  # dash.js leaves a pathway without samples empty
                value = _throughput(raw)
                if value is None or index >= len(entries):
                    malformed.append("throughput")
                    continue
                location = entries[index]
                if location is not None:
                    throughput[location] = value
        elif dash_throughput is not None:
            malformed.append("throughput")
    return SteeringQuery(protocol, current, throughput, tuple(malformed))


# -- pathway health -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One pathway or clone the monitor probes."""

    id: str
    base_url: str
    weight: int
    clone_of: str | None = None


@dataclass(slots=True)
class _State:
    up: bool = True
    changed_at: float = 0.0
    recovered_at: float | None = None
    failures: int = 0
    probes: int = 0
    last_error: str | None = None


def targets_of(settings: Settings) -> tuple[Target, ...]:
    """The configured pathways, then the clones (at their base pathway's URL
    with the host replaced)."""
    targets = [Target(p.id, p.base_url, p.weight) for p in settings.pathways]
    bases = {p.id: p.base_url for p in settings.pathways}
    for clone in settings.pathway_clones:
        if clone.base_id in bases:
            url = clone_base_url(bases[clone.base_id], clone.host)
            targets.append(Target(clone.id, url, clone.weight, clone.base_id))
    return tuple(targets)


class PathwayMonitor:
    """Health of every pathway, from probes; :meth:`record` holds the rules and
    is what the probe loop calls, so tests can drive it without a network."""

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        health_path: str = "/healthz",
        interval_s: float = 2.0,
        timeout_s: float = 1.0,
        failures_to_down: int = 3,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = tuple(targets)
        self.health_path = health_path
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures_to_down = max(1, failures_to_down)
        self.metrics = metrics
        self.clock = clock
        started = clock()
        self._states = {t.id: _State(changed_at=started) for t in self.targets}
        for target in self.targets:
            self._set_gauge(target.id, up=True)

    def _set_gauge(self, pathway_id: str, *, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.pathway_up.labels(pathway_id).set(1 if up else 0)

    def now(self) -> float:
        return self.clock()

    def record(self, pathway_id: str, ok: bool, error: str | None = None) -> None:
        """One probe result: N failures in a row take a pathway down, one success
        brings it back."""
        state = self._states[pathway_id]
        now = self.clock()
        state.probes += 1
        if ok:
            state.failures = 0
            state.last_error = None
            if not state.up:
                state.up = True
                state.changed_at = now
                state.recovered_at = now
                self._set_gauge(pathway_id, up=True)
                log.warning("pathway %s is back up", pathway_id)
            return
        state.failures += 1
        state.last_error = error
        if state.up and state.failures >= self.failures_to_down:
            state.up = False
            state.changed_at = now
            self._set_gauge(pathway_id, up=False)
            log.warning(
                "pathway %s is down after %d failed probes: %s", pathway_id, state.failures, error
            )

    def health(self) -> dict[str, Health]:
        return {
            pathway_id: Health(state.up, state.recovered_at)
            for pathway_id, state in self._states.items()
        }

    def probe_url(self, target: Target) -> str:
        return target.base_url.rstrip("/") + self.health_path

    async def probe(self, session: aiohttp.ClientSession, target: Target) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with session.get(
                self.probe_url(target), timeout=timeout, allow_redirects=False
            ) as response:
                await response.read()
                ok = 200 <= response.status < 400
                self.record(target.id, ok, None if ok else f"HTTP {response.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.record(target.id, False, type(exc).__name__ + (f": {exc}" if str(exc) else ""))

    async def probe_all(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self.probe(session, target) for target in self.targets))

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Probe every pathway, then again every ``interval_s``, until cancelled."""
        while True:
            started = self.clock()
            try:
                await self.probe_all(session)
            except Exception:  # a bug in one round must not freeze every pathway's health
                log.exception("pathway health round failed; probing again next interval")
            await asyncio.sleep(max(0.0, self.interval_s - (self.clock() - started)))

    def report(self) -> list[dict[str, Any]]:
        now = self.clock()
        rows = []
        for target in self.targets:
            state = self._states[target.id]
            rows.append(
                {
                    "id": target.id,
                    "base_url": target.base_url,
                    "weight": target.weight,
                    "clone_of": target.clone_of,
                    "up": state.up,
                    "for_s": round(now - state.changed_at, 3),
                    "failures_in_a_row": state.failures,
                    "probes": state.probes,
                    "last_error": state.last_error,
                }
            )
        return rows


PATHWAY_MONITOR: Final = web.AppKey("pathway_monitor", PathwayMonitor)


async def content_steering_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pathway monitor and its probe loop, for as long as the app runs."""
    settings = app[SETTINGS]
    monitor = PathwayMonitor(
        targets_of(settings),
        health_path=settings.pathway_health_path,
        interval_s=settings.pathway_health_interval_s,
        timeout_s=settings.pathway_health_timeout_s,
        failures_to_down=settings.pathway_health_failures,
        metrics=app[METRICS],
    )
    app[PATHWAY_MONITOR] = monitor
    # A fresh connection per probe (force_close): what a player meeting the CDN does.
    connector = aiohttp.TCPConnector(force_close=True, limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        task = asyncio.create_task(monitor.run(session), name="pathway-health")
        try:
            yield
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a dead probe loop must not leak the session on shutdown
                log.exception("the pathway health loop had stopped with an error")


# -- manifests and handlers -----------------------------------------------------------


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
        now = 0.0
    else:
        health, now = monitor.health(), monitor.now()
    current = query.current if query is not None else _default_pathway(settings)
    return rank_pathways(
        targets,
        health,
        current,
        query.throughput_bps if query is not None else {},
        now,
        recover_hold_s=settings.pathway_recover_hold_s,
    )


def steering_for(request: web.Request, track: str, protocol: str) -> SteeringConfig | None:
    """The steering block of a track's manifests, or ``None`` without pathways.

    Players start on the best pathway for a newcomer (the configured default
    unless the probes say otherwise).  The server URI is absolute, on
    ``content_steering_url`` or else on the host the manifest was asked of."""
    settings = request.app[SETTINGS]
    if not settings.pathways:
        return None
    base = settings.content_steering_url or f"{request.scheme}://{request.host}"
    server_uri = f"{base.rstrip('/')}/v1/steering/{quote(track, safe='')}?protocol={protocol}"
    default = _ranked(settings, request.app.get(PATHWAY_MONITOR), None, clones=False)[0]
    # A signed manifest's pathway URIs carry its token, as relative URIs would.
    token, _rest = split_token_path(request.raw_path.split("?", 1)[0], strict=False)
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
