"""Waiting on what can be observed instead of sleeping for a while.

:func:`wait_for` (:func:`wait_for_async` in a coroutine) polls a condition
until it holds, within a deadline that is a bound on a hang (generous: a
loaded two-core machine only makes it slower), never a measurement.
:func:`tcp_row` reads a loopback connection's state from ``/proc/net/tcp``
(Linux): whether the server end of it still exists, and how many bytes sit
unread in its receive queue or unacknowledged in its send queue, so a test
can wait until the server has read what it was sent, or has dropped a
connection, without guessing how long that takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

# Long enough for anything a test waits for on a loaded machine; a test that hits
# it has hung, it is not slow.
DEFAULT_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.02

# TCP states as /proc/net/tcp spells them (include/net/tcp_states.h).
ESTABLISHED: Final = "01"
CLOSE_WAIT: Final = "08"
LISTEN: Final = "0A"
# The states in which a process may still hold the socket (not yet closed by it).
HELD_STATES: Final = frozenset({ESTABLISHED, CLOSE_WAIT})


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = POLL_S,
) -> T:
    """``condition()``'s first truthy value, polled every ``poll_s``; an
    AssertionError naming ``what`` if it is still falsy after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still not so after {timeout_s:g} s")
        time.sleep(poll_s)


async def wait_for_async(
    condition: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = POLL_S,
) -> T:
    """:func:`wait_for` for a coroutine condition, without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still not so after {timeout_s:g} s")
        await asyncio.sleep(poll_s)


@dataclass(frozen=True, slots=True)
class TcpRow:
    """One socket of ``/proc/net/tcp``: its state and queues (bytes)."""

    local_port: int
    remote_port: int
    state: str
    send_queue_bytes: int  # sent and not yet acknowledged by the peer
    receive_queue_bytes: int  # received and not yet read by the process (LISTEN: accept queue)


def tcp_rows() -> list[TcpRow]:
    """Every TCP socket of this network namespace (IPv4 and IPv6)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                send_queue, _, receive_queue = fields[4].partition(":")
                rows.append(
                    TcpRow(
                        local_port=int(fields[1].rsplit(":", 1)[1], 16),
                        remote_port=int(fields[2].rsplit(":", 1)[1], 16),
                        state=fields[3],
                        send_queue_bytes=int(send_queue, 16),
                        receive_queue_bytes=int(receive_queue, 16),
                    )
                )
    return rows


def tcp_row(local_port: int, remote_port: int) -> TcpRow | None:
    """The socket from ``local_port`` to ``remote_port`` (on loopback both ends are
    listed: pass the server's port first for the server's end)."""
    for row in tcp_rows():
        if (row.local_port, row.remote_port) == (local_port, remote_port):
            return row
    return None


def listener(port: int) -> TcpRow | None:
    """The listening socket on ``port``; its receive queue is the accept queue."""
    for row in tcp_rows():
        if row.local_port == port and row.state == LISTEN:
            return row
    return None


def connections_held(port: int) -> int:
    """Server ends of connections on ``port`` that the server process may still
    hold: established, or closed by the client and not yet by the server."""
    return sum(1 for r in tcp_rows() if r.local_port == port and r.state in HELD_STATES)


def read_by_server(server_port: int, client_port: int) -> bool:
    """Everything the client sent on this connection has reached the server and
    the server process has read it: the client's send queue and the server's
    receive queue are both empty."""
    client = tcp_row(client_port, server_port)
    server = tcp_row(server_port, client_port)
    return (
        client is not None
        and server is not None
        and client.send_queue_bytes == 0
        and server.receive_queue_bytes == 0
    )
