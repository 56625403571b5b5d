"""Atomic writes and deferred removal for the live track."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or not at all: written aside, then renamed
    (a reader never sees a file half written)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


class Reaper:
    """Removes objects some time after they were dropped from ``live.json``, so a
    reader that fetched the model just before can still fetch them; ``remove`` is the
    sink's (:meth:`cadenza.packager.live.sink.LiveSink.remove`)."""

    def __init__(
        self, clock: Callable[[], float], grace_s: float, remove: Callable[[str], None]
    ) -> None:
        self._clock = clock
        self._grace_s = grace_s
        self._remove = remove
        self._due: list[tuple[float, str]] = []

    def schedule(self, names: list[str]) -> None:
        when = self._clock() + self._grace_s
        self._due += [(when, name) for name in names]

    def reap(self, *, everything: bool = False) -> None:
        now = self._clock()
        keep = []
        for when, name in self._due:
            if everything or when <= now:
                self._remove(name)
            else:
                keep.append((when, name))
        self._due = keep
