"""Atomic writes and deferred removal for the live track folder."""

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
    """Removes files some time after they were dropped from ``live.json``, so a reader
    that fetched the model just before can still fetch them."""

    def __init__(self, clock: Callable[[], float], grace_s: float) -> None:
        self._clock = clock
        self._grace_s = grace_s
        self._due: list[tuple[float, Path]] = []

    def schedule(self, paths: list[Path]) -> None:
        when = self._clock() + self._grace_s
        self._due += [(when, p) for p in paths]

    def reap(self, *, everything: bool = False) -> None:
        now = self._clock()
        keep = []
        for when, path in self._due:
            if everything or when <= now:
                path.unlink(missing_ok=True)
            else:
                keep.append((when, path))
        self._due = keep
