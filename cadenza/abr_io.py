"""The files ``cadenza abr`` and ``cadenza ladder`` read: throughput traces, ladder
options, CMCD beacon logs.

:mod:`cadenza.abr` is pure (text in, models out); this is where its inputs come
from.  Every problem with an input is a :class:`UsageError` whose message names
the file (and the line, for a bad line), for the commands to print.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cadenza.abr.errors import BeaconLogError, TraceError
from cadenza.abr.population import final_estimates_bps
from cadenza.abr.traces import DEFAULT_RTT_S, Trace, parse_scenario_rtt_s, parse_trace, scale_trace
from cadenza.manifests.model import Codec

# A file beside the traces of one scenario that gives their RTT (``rtt_ms = 50``).
SCENARIO_FILE: Final = "scenario.toml"
# Files that live beside traces but are not traces: dotfiles, licences, readmes,
# configuration and code.  Anything else (``*.txt`` included) is read as a trace.
_NOT_TRACE_PREFIXES: Final = (".", "LICENSE", "README")
_NOT_TRACE_SUFFIXES: Final = (".toml", ".py", ".md", ".json")


class UsageError(Exception):
    """An input the command cannot use; the message is the one-line reason."""


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(str(path), 0, f"not UTF-8 text: {exc}") from None


def scenario_rtt_s(directory: Path) -> float:
    """The RTT ``directory/scenario.toml`` gives, else :data:`DEFAULT_RTT_S`."""
    scenario = directory / SCENARIO_FILE
    if not scenario.is_file():
        return DEFAULT_RTT_S
    return parse_scenario_rtt_s(_read_text(scenario), str(scenario))


def read_trace(path: Path, rtt_s: float | None = None) -> Trace:
    """One trace file, named after the file; the RTT from a ``scenario.toml`` beside it
    when ``rtt_s`` is None.  Raises :class:`~cadenza.abr.errors.TraceError`."""
    rtt = scenario_rtt_s(path.parent) if rtt_s is None else rtt_s
    return parse_trace(_read_text(path), path.name, rtt_s=rtt, source=str(path))


def is_trace_file(path: Path) -> bool:
    """Whether a file in a trace folder is a trace (not a dotfile, licence, readme, config)."""
    name = path.name
    return (
        path.is_file()
        and not name.startswith(_NOT_TRACE_PREFIXES)
        and not name.endswith(_NOT_TRACE_SUFFIXES)
    )


def read_trace_folder(directory: Path) -> list[Trace]:
    """Every trace under ``directory`` (recursively), sorted by name then path."""
    paths = sorted(
        (path for path in directory.rglob("*") if is_trace_file(path)),
        key=lambda path: (path.name, str(path)),
    )
    return [read_trace(path) for path in paths]


def read_traces(sources: Sequence[Path], scale: float = 1.0) -> list[Trace]:
    """The traces of every ``--traces`` source (a folder, or one trace file), scaled."""
    traces: list[Trace] = []
    for source in sources:
        try:
            if source.is_file():
                found = [read_trace(source)]
            elif source.is_dir():
                found = read_trace_folder(source)
            else:
                raise UsageError(f"--traces {source}: no such file or folder")
        except TraceError as exc:
            raise UsageError(str(exc)) from None
        if not found:
            raise UsageError(f"--traces {source}: no trace files in it")
        traces.extend(found)
    if scale != 1.0:
        traces = [scale_trace(trace, scale) for trace in traces]
    return traces


# The codecs whose rungs a ladder option stands for when none is named, in order.
LOSSY_CODECS: Final = (Codec.AAC, Codec.OPUS)


def read_ladder_option(text: str, codec: Codec | None = Codec.AAC) -> tuple[int, ...]:
    """``--ladder``: ``64,128,256`` (kb/s), a preset name or a ladder file (TOML/JSON,
    the format ``cadenza package --ladder`` reads, as strictly): ``codec``'s rungs in
    bit/s, ascending.  ``codec`` None: the first of :data:`LOSSY_CODECS` the ladder has
    rungs for, so any ladder with a lossy rung can be simulated."""
    parts = [part.strip() for part in text.split(",")]
    if all(part.isascii() and part.isdigit() for part in parts):
        values = sorted({int(part) * 1000 for part in parts})
        if values[0] <= 0:
            raise UsageError(f"--ladder {text!r}: bitrates must be positive kb/s")
        return tuple(values)
    from cadenza.packager.errors import LadderError
    from cadenza.packager.ladder import load_ladder

    try:
        ladder = load_ladder(text)
    except LadderError as exc:
        where = "" if exc.where == text else f"{exc.where}: "
        raise UsageError(f"--ladder {text}: {where}{exc.reason}") from None
    if codec is None:
        for lossy in LOSSY_CODECS:
            if ladder.bitrates_bps(lossy):
                return ladder.bitrates_bps(lossy)
        names = " or ".join(c.value for c in LOSSY_CODECS)
        raise UsageError(f"--ladder {text}: the ladder has no {names} rungs")
    values_bps = ladder.bitrates_bps(codec)
    if not values_bps:
        raise UsageError(f"--ladder {text}: the ladder has no {codec.value} rungs")
    return values_bps


def read_beacon_estimates(path: Path) -> list[float]:
    """Each session's final throughput estimate (bit/s) in a CMCD beacon log."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--beacons {path}: {exc}") from None
    try:
        return final_estimates_bps(lines)
    except BeaconLogError as exc:
        raise UsageError(f"--beacons {path}:{exc.line_no}: {exc.reason}") from None
