"""Many concurrent LL-HLS blocking playlist reloads against one ``cadenza serve``
worker: shared by the load test (``tests/origin/test_live_load.py``) and the
``live`` benchmark suite (``bench/live_bench.py``), so both hold the requests the
same way.  Imports neither pytest nor anything only the tests install (``make
bench`` runs without the test extras).

A :class:`ClientFleet` is one aiohttp client connector without a connection
limit: :meth:`ClientFleet.open_idle` leaves ``count`` keep-alive connections idle
in its pool (each made one ordinary request), :meth:`ClientFleet.ask` sends
``count`` requests at once, each on its own connection, and records when each
answer was whole.  :func:`wait_held` polls the origin's
``cadenza_live_blocked_requests`` gauge (a condition, bounded), never a sleep
standing in for a wait.  A blocking reload (``_HLS_msn``/``_HLS_part``) is held
by the origin until the part exists (RFC 8216bis 6.2.5.2).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from aiohttp import ClientSession, ClientTimeout, TCPConnector

BLOCKED_GAUGE: Final = "cadenza_live_blocked_requests"
ANSWERED_COUNTER: Final = 'cadenza_live_blocking_requests_total{outcome="answered"}'
# A fleet's connections stay open this long when idle (client side); the origin's
# own idle limit is its ``keepalive_timeout_s``.
IDLE_KEEP_S: Final = 120.0
# Bounds on a hang (a loaded two-core machine only makes things slower), not measurements.
ANSWER_TIMEOUT_S: Final = 120.0
HELD_TIMEOUT_S: Final = 60.0
HELD_POLL_S: Final = 0.02


def metric(url: str, name: str) -> float:
    """One sample of the origin's Prometheus text at ``url/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


@dataclass(frozen=True, slots=True)
class Answer:
    """One response: its status, body, and the wall clock (``time.time``) when the
    whole body had arrived."""

    status: int
    body: bytes
    done_s: float


class ClientFleet:
    """``count`` client connections to ``url`` from one connector (``limit=0``)."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self._http: ClientSession | None = None

    async def __aenter__(self) -> ClientFleet:
        connector = TCPConnector(limit=0, keepalive_timeout=IDLE_KEEP_S)
        timeout = ClientTimeout(total=ANSWER_TIMEOUT_S)
        self._http = ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _get(self, path: str) -> Answer:
        assert self._http is not None, "use the fleet as an async context manager"
        async with self._http.get(f"{self.url}{path}") as response:
            body = await response.read()
            return Answer(response.status, body, time.time())

    async def open_idle(self, path: str) -> list[Answer]:
        """``count`` requests for ``path`` at once: every one opens its own
        connection (none is free while they all connect), which then stays idle,
        kept alive, in the pool."""
        return list(await asyncio.gather(*(self._get(path) for _ in range(self.count))))

    def ask(self, path: str) -> asyncio.Future[list[Answer]]:
        """``count`` requests for ``path`` at once, each on its own connection (an
        idle one from :meth:`open_idle`, else a new one); the future of their answers."""
        return asyncio.gather(*(self._get(path) for _ in range(self.count)))


async def wait_held(
    url: str,
    count: int,
    *,
    give_up: Callable[[], bool] | None = None,
    timeout_s: float = HELD_TIMEOUT_S,
) -> float:
    """Until the origin at ``url`` holds ``count`` blocking requests (its gauge),
    or ``give_up()`` is true, within ``timeout_s``; the most the gauge showed."""
    deadline = time.monotonic() + timeout_s
    most = 0.0
    while True:
        held = await asyncio.to_thread(metric, url, BLOCKED_GAUGE)
        most = max(most, held)
        if held >= count or (give_up is not None and give_up()):
            return most
        if time.monotonic() >= deadline:
            raise AssertionError(f"{count} blocked: {most:g} at most after {timeout_s:g} s")
        await asyncio.sleep(HELD_POLL_S)
