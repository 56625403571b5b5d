"""Pathway health, from probes: a background task asks ``base_url +
pathway_health_path`` of every pathway (and clone) every
``pathway_health_interval_s``; a pathway is down after
``pathway_health_failures`` failed probes in a row and up again after one
success (``cadenza_pathway_up{pathway}``).  :class:`PathwayMonitor` holds the
rules, :func:`content_steering_ctx` runs the probe loop for the app's lifetime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web

from cadenza.origin.keys import METRICS, SETTINGS
from cadenza.origin.metrics import Metrics
from cadenza.origin.pathways import clone_base_url
from cadenza.origin.settings import Settings
from cadenza.origin.steering_policy import Health

log = logging.getLogger("cadenza.origin.content_steering")


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
    changed_at_s: float = 0.0
    recovered_at_s: float | None = None
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
        self._states = {t.id: _State(changed_at_s=started) for t in self.targets}
        for target in self.targets:
            self._set_gauge(target.id, up=True)

    def _set_gauge(self, pathway_id: str, *, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.pathway_up.labels(pathway_id).set(1 if up else 0)

    def now_s(self) -> float:
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
                state.changed_at_s = now
                state.recovered_at_s = now
                self._set_gauge(pathway_id, up=True)
                log.warning("pathway %s is back up", pathway_id)
            return
        state.failures += 1
        state.last_error = error
        if state.up and state.failures >= self.failures_to_down:
            state.up = False
            state.changed_at_s = now
            self._set_gauge(pathway_id, up=False)
            log.warning(
                "pathway %s is down after %d failed probes: %s", pathway_id, state.failures, error
            )

    def health(self) -> dict[str, Health]:
        return {
            pathway_id: Health(state.up, state.recovered_at_s)
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
                    "for_s": round(now - state.changed_at_s, 3),
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
