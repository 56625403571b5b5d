"""What a batch packages: inputs from the command line or a catalogue file, and
the shard of them this run takes.

A catalogue (``--catalogue FILE``) is read by its name:

* ``*.csv``: CSV with a header row naming ``track_id`` and ``source`` (any order;
  other columns are ignored).  An empty ``track_id`` falls back to the source's
  stem.  Rows whose first cell starts with ``#`` and blank rows are skipped.
* anything else: text, one source a line; blank lines and ``#`` comments skipped,
  surrounding whitespace stripped.

A source is a local path (relative ones are relative to the catalogue's own
folder) or an ``s3://bucket/key`` URL, which is downloaded before packaging.
Every bad line is reported at once, with its line number.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cadenza.packager.errors import CatalogueError
from cadenza.packager.output import track_id_for
from cadenza.store.s3url import is_s3_url, parse_s3_url

TRACK_ID_MAX: Final = 200
_TRACK_ID: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class TrackInput:
    """One track to package: where its source is, and the id it is published under."""

    source: str  # a local path or s3://bucket/key
    track_id: str

    @classmethod
    def from_path(cls, path: Path) -> TrackInput:
        return cls(str(path), track_id_for(path))


def track_id_problem(track_id: str) -> str | None:
    """Why ``track_id`` cannot name a track folder (and a URL path segment), or None."""
    if len(track_id) > TRACK_ID_MAX:
        return f"track id is longer than {TRACK_ID_MAX} characters"
    if not _TRACK_ID.match(track_id):
        return f"track id {track_id!r} may hold only A-Z a-z 0-9 . _ - and must not start with '.'"
    return None


def source_input(text: str, base: Path | None = None, track_id: str | None = None) -> TrackInput:
    """A source as written on the command line or in a catalogue. Raises ValueError."""
    if is_s3_url(text):
        url = parse_s3_url(text, prefix=False)
        source = str(url)
        derived = track_id_for(Path(url.key))
    elif _SCHEME.match(text):
        scheme = text.split("://", 1)[0]
        raise ValueError(f"{scheme}:// sources are not supported: give a local path or s3:// URL")
    else:
        path = Path(text).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        source = str(path)
        derived = track_id_for(path)
    return TrackInput(source, track_id or derived)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CatalogueError(path, [(0, "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise CatalogueError(path, [(0, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise CatalogueError(path, [(0, f"cannot read: {exc.strerror or exc}")]) from None


def parse_text(text: str, base: Path | None) -> tuple[list[TrackInput], list[tuple[int, str]]]:
    inputs: list[TrackInput] = []
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            inputs.append(source_input(line, base))
        except ValueError as exc:
            problems.append((number, str(exc)))
    return inputs, problems


def parse_csv(text: str, base: Path | None) -> tuple[list[TrackInput], list[tuple[int, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    inputs: list[TrackInput] = []
    problems: list[tuple[int, str]] = []
    columns: dict[str, int] | None = None
    try:
        for row in reader:
            number = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if columns is None:
                columns = {name.lower(): i for i, name in enumerate(cells)}
                missing = [c for c in ("track_id", "source") if c not in columns]
                if missing:
                    problems.append(
                        (
                            number,
                            f"the header row must name the columns track_id and source "
                            f"(missing: {', '.join(missing)}; found: {', '.join(cells)})",
                        )
                    )
                    return [], problems
                continue
            width = max(columns["track_id"], columns["source"]) + 1
            if len(cells) < width:
                problems.append((number, f"{len(cells)} cells; the header has {len(columns)}"))
                continue
            track_id, source = cells[columns["track_id"]], cells[columns["source"]]
            if not source:
                problems.append((number, "no source"))
                continue
            if track_id and (problem := track_id_problem(track_id)):
                problems.append((number, problem))
                continue
            try:
                inputs.append(source_input(source, base, track_id or None))
            except ValueError as exc:
                problems.append((number, str(exc)))
    except csv.Error as exc:
        problems.append((reader.line_num, f"not valid CSV: {exc}"))
    if columns is None and not problems:
        problems.append((0, "no header row (track_id,source)"))
    return inputs, problems


def read_catalogue(path: Path) -> list[TrackInput]:
    """Every track a catalogue file lists, in order; CatalogueError names each bad line."""
    text = _read_text(path)
    base = path.parent
    if path.suffix.lower() == ".csv":
        inputs, problems = parse_csv(text, base)
    else:
        inputs, problems = parse_text(text, base)
    if problems:
        raise CatalogueError(path, problems)
    return inputs


def shard_of(track_id: str, count: int) -> int:
    """The shard (0 to count - 1) a track belongs to: a stable hash of its id, the same
    on every machine and run, whatever the order or the other tracks of the input."""
    digest = hashlib.blake2b(track_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def select_shard(inputs: Iterable[TrackInput], index: int, count: int) -> list[TrackInput]:
    return [i for i in inputs if shard_of(i.track_id, count) == index]


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), 0 <= I < N. Raises ValueError."""
    index_text, slash, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"{text!r} is not I/N (e.g. 0/4)") from None
    if not slash or count < 1 or not 0 <= index < count:
        raise ValueError(f"{text!r}: need 0 <= I < N, e.g. 0/4 ... 3/4")
    return index, count


def as_inputs(items: Sequence[Path | TrackInput]) -> list[TrackInput]:
    return [i if isinstance(i, TrackInput) else TrackInput.from_path(i) for i in items]
