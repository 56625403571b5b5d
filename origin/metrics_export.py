"""What ``/metrics`` exports beyond the app's own metrics, and what it leaves out.

- ``cadenza_build_info{version,python,aiohttp}``: always 1; the labels say what runs.
- ``process_*``: a :class:`~prometheus_client.ProcessCollector` on the app's registry with
  one process; with ``--workers N`` the serving processes are the workers, so
  :class:`WorkerProcesses` exports each live worker's, labelled ``pid``.
- No ``*_created`` series: the exposition's creation timestamps are noise to every
  dashboard and alert here, and double the series count of each counter and histogram.
- Families left out by name: ``cadenza_redis_up`` when no Redis is configured (a 0 there
  would read as an outage).
"""

from __future__ import annotations

import functools
import os
import platform
import re
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Final

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The sample suffix of the creation timestamp prometheus_client adds to counters,
# histograms and summaries.
CREATED_SUFFIX: Final = "_created"
# A multiprocess file: <type>[_<mode>]_<pid>.db (prometheus_client.values.MultiProcessValue).
_WORKER_FILE: Final = re.compile(r"[a-z_]+_(\d+)\.db")


def _installed_version(distribution: str) -> str:
    try:
        return distribution_version(distribution)
    except PackageNotFoundError:  # a checkout imported without being installed
        return "0+unknown"


class BuildInfo(Collector):
    """``cadenza_build_info``: 1, labelled with the versions that run."""

    def __init__(self) -> None:
        self.labels: Final = {
            "version": _installed_version("cadenza"),
            "python": platform.python_version(),
            "aiohttp": _installed_version("aiohttp"),
        }

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "cadenza_build_info",
            "Always 1: the cadenza, Python and aiohttp versions this origin runs",
            labels=list(self.labels),
        )
        family.add_metric(list(self.labels.values()), 1)
        yield family


class WorkerProcesses(Collector):
    """``process_*`` of every live worker that writes to the multiprocess folder,
    labelled ``pid`` (the folder's file names carry the writers' pids)."""

    def __init__(self, folder: Path, proc: Path = Path("/proc")) -> None:
        self.folder = folder
        self.proc = proc

    def pids(self) -> list[int]:
        found = {
            int(match.group(1))
            for name in os.listdir(self.folder)
            if (match := _WORKER_FILE.fullmatch(name))
        }
        return sorted(pid for pid in found if (self.proc / str(pid)).is_dir())

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids():
            one = ProcessCollector(
                pid=functools.partial(int, pid), proc=str(self.proc), registry=None
            )
            for family in one.collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


class Exported(Collector):
    """``sources`` as ``/metrics`` shows them: no ``*_created`` samples, and no family
    named in ``hidden``."""

    def __init__(self, sources: Iterable[Collector], hidden: frozenset[str]) -> None:
        self.sources = tuple(sources)
        self.hidden = hidden

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            for family in source.collect():
                if family.name in self.hidden:
                    continue
                kept = [s for s in family.samples if not s.name.endswith(CREATED_SUFFIX)]
                if len(kept) != len(family.samples):
                    family.samples = kept
                yield family
