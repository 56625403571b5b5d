"""``cadenza serve --workers N``: N worker processes on one port, supervised.

A worker that dies (a crash, the OOM killer's ``SIGKILL``) is logged with its
exit code or signal and started again after a delay that doubles with each
death in a row (:class:`RestartPolicy`, capped).  A worker that lived
``stable_s`` resets the count.  When ``max_rapid_deaths`` workers in a row
die before they were stable, the origin is in a crash loop that restarting
will not fix (a bad setting, storage refusing every worker): the supervisor
says so in one line, stops the others and exits 1.  A worker that could not
listen (:data:`EXIT_CANNOT_LISTEN`) is not restarted: the supervisor exits 2.

SIGTERM and SIGINT are passed to every worker, which drain as a single
process does (``cadenza.origin.server.serve_until_signalled``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Final

log = logging.getLogger("cadenza.origin.supervisor")

# A worker's exit code when it could not bind its port: not worth a restart.
EXIT_CANNOT_LISTEN: Final = 2
# Exit code of the supervisor when it gave up on a crash loop.
EXIT_CRASH_LOOP: Final = 1


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay_s: float = 0.5  # after the first death in a row
    max_delay_s: float = 30.0  # the doubling stops here
    stable_s: float = 30.0  # a worker that lived this long was not part of a crash loop
    max_rapid_deaths: int = 5  # deaths in a row, each of a worker not yet stable: give up

    def delay_s(self, rapid_deaths: int) -> float:
        """The wait before the restart that follows the ``rapid_deaths``-th death in a row."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** max(0, rapid_deaths - 1))


class Verdict(enum.Enum):
    RESTART = "restart"
    GIVE_UP = "give_up"  # a crash loop
    CANNOT_LISTEN = "cannot_listen"


@dataclass(slots=True)
class CrashLoop:
    """What one more death means (pure: the caller measures the lifetime)."""

    policy: RestartPolicy
    rapid_deaths: int = 0

    def on_death(self, lived_s: float, exitcode: int | None) -> tuple[Verdict, float]:
        """(verdict, seconds to wait before the restart)."""
        if exitcode == EXIT_CANNOT_LISTEN:
            return Verdict.CANNOT_LISTEN, 0.0
        self.rapid_deaths = 1 if lived_s >= self.policy.stable_s else self.rapid_deaths + 1
        if self.rapid_deaths >= self.policy.max_rapid_deaths:
            return Verdict.GIVE_UP, 0.0
        return Verdict.RESTART, self.policy.delay_s(self.rapid_deaths)


def describe_exit(exitcode: int | None) -> str:
    """``exited with code 3``, ``killed by SIGKILL`` (multiprocessing reports a
    signal as its negated number)."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}"
    return f"exited with code {exitcode}"


@dataclass(slots=True)
class _Slot:
    process: BaseProcess | None
    started_s: float
    restart_at_s: float | None = None


def supervise(
    start_worker: Callable[[], BaseProcess],
    count: int,
    *,
    policy: RestartPolicy = RestartPolicy(),
    stop_timeout_s: float = 15.0,
    on_death: Callable[[int], None] = lambda _pid: None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``count`` workers until SIGTERM or SIGINT (0), a crash loop
    (:data:`EXIT_CRASH_LOOP`) or a worker that cannot listen
    (:data:`EXIT_CANNOT_LISTEN`).  ``on_death(pid)``: after each death (the
    metrics forget a dead worker's live gauges)."""
    crash_loop = CrashLoop(policy)
    slots = [_Slot(None, 0.0) for _ in range(count)]
    stopping: list[int] = []  # the signal that asked to stop, once one has
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)

    def ask_stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    old_wakeup = signal.set_wakeup_fd(wake_write.fileno())
    old_handlers = {s: signal.signal(s, ask_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for index, slot in enumerate(slots):
            slot.process, slot.started_s = start_worker(), clock()
            log.info("worker %d started: pid %s", index, slot.process.pid)
        while not stopping and code == 0:
            now_s = clock()
            due = [s.restart_at_s for s in slots if s.restart_at_s is not None]
            timeout_s = max(0.0, min(due) - now_s) if due else None
            sentinels = [s.process.sentinel for s in slots if s.process is not None]
            wait([*sentinels, wake_read], timeout_s)
            with contextlib.suppress(BlockingIOError):
                wake_read.recv(4096)
            now_s = clock()
            for index, slot in enumerate(slots):
                process = slot.process
                if process is not None and not process.is_alive():
                    process.join()
                    slot.process = None
                    code, delay_s = _after_death(crash_loop, index, process, now_s - slot.started_s)
                    if process.pid is not None:
                        on_death(process.pid)
                    if code:
                        break
                    slot.restart_at_s = now_s + delay_s
            if code:
                break
            for index, slot in enumerate(slots):
                if slot.restart_at_s is not None and slot.restart_at_s <= clock() and not stopping:
                    slot.process, slot.started_s = start_worker(), clock()
                    slot.restart_at_s = None
                    log.warning("worker %d restarted: pid %s", index, slot.process.pid)
        if stopping:
            log.info("signalled: stopping %d workers", sum(s.process is not None for s in slots))
    finally:
        _stop_all([s.process for s in slots if s.process is not None], stop_timeout_s)
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        wake_read.close()
        wake_write.close()
    return code


def _after_death(
    crash_loop: CrashLoop, index: int, process: BaseProcess, lived_s: float
) -> tuple[int, float]:
    """Log a death and decide: (0, the delay before its restart), or (the
    supervisor's exit code, 0)."""
    verdict, delay_s = crash_loop.on_death(lived_s, process.exitcode)
    how = describe_exit(process.exitcode)
    if verdict is Verdict.CANNOT_LISTEN:
        log.error("worker %d (pid %s) could not listen: stopping", index, process.pid)
        return EXIT_CANNOT_LISTEN, 0.0
    if verdict is Verdict.GIVE_UP:
        log.error(
            "worker %d (pid %s) %s after %.1f s; giving up: %d workers in a row died within "
            "%g s of starting (a crash loop): stopping",
            index,
            process.pid,
            how,
            lived_s,
            crash_loop.rapid_deaths,
            crash_loop.policy.stable_s,
        )
        return EXIT_CRASH_LOOP, 0.0
    log.warning(
        "worker %d (pid %s) %s after %.1f s; restarting it in %g s",
        index,
        process.pid,
        how,
        lived_s,
        delay_s,
    )
    return 0, delay_s


def _stop_all(processes: list[BaseProcess], timeout_s: float) -> None:
    """SIGTERM to every worker (each drains), then SIGKILL to any still running
    ``timeout_s`` later."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline_s = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline_s - time.monotonic()))
        if process.is_alive():
            log.warning("worker pid %s did not stop in %g s: killed", process.pid, timeout_s)
            process.kill()
            process.join()
