"""Shared pieces of the benchmark suite: rows, medians, timing of child processes.

Every figure is a median over ``runs`` repetitions after one warm-up, and the
cadenza run and its peer alternate, so a noisy neighbour hits both alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table: cadenza against its peer on one piece of work."""

    work: str
    peer: str
    metric: str  # what ``cadenza`` and ``peer_value`` measure, with its unit
    cadenza: float
    peer_value: float
    goal: str  # as the issue states it, e.g. "wall <= 0.95x"
    met: bool | None  # None when the goal is not a simple ratio of these two figures
    higher_is_better: bool = False
    runs: int = 1
    extra: dict[str, float | str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """cadenza / peer."""
        return self.cadenza / self.peer_value if self.peer_value else float("inf")

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio"] = round(self.ratio, 3)
        return data


@dataclass(frozen=True, slots=True)
class ProcessRun:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float


def run_process(argv: Sequence[str], *, env: dict[str, str] | None = None) -> ProcessRun:
    """Run a command to completion; wall time, CPU time (user + sys of it and its
    children) and peak RSS (the largest of any one process in its tree, from wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {process.returncode}: {stderr[-2000:]}")
    # wait4 reports the child together with the descendants it reaped (Linux
    # RUSAGE_BOTH): CPU is their sum, ru_maxrss the largest single process.
    return ProcessRun(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0)


def alternate(
    first: Callable[[], ProcessRun],
    second: Callable[[], ProcessRun],
    runs: int,
    *,
    warm_up: bool = True,
) -> tuple[list[ProcessRun], list[ProcessRun]]:
    """One warm-up of each (unless the caller warmed up more cheaply), then
    ``runs`` of each, alternating which goes first."""
    if warm_up:
        first()
        second()
    a: list[ProcessRun] = []
    b: list[ProcessRun] = []
    for index in range(runs):
        if index % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def median_run(runs: Sequence[ProcessRun]) -> ProcessRun:
    return ProcessRun(
        median([r.wall_s for r in runs]),
        median([r.cpu_s for r in runs]),
        max(r.peak_rss_mib for r in runs),
    )


def clean(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)], check=True)


def group_cpu_s(pgid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds (``utime + stime``) of every live process in the process group
    ``pgid``, read from ``/proc`` (proc(5)); with ``reaped_children``, also the
    ``cutime + cstime`` of the children they waited for (a build's child process)."""
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    last = 15 if reaped_children else 13
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # after the command name
        if int(fields[2]) == pgid:  # pgrp
            total += sum(int(value) for value in fields[11:last])
    return total * tick_s
