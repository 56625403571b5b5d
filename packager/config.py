"""``cadenza package --config FILE.toml``: one file describes a packaging job.

Like a shaka-streamer pipeline config, the file names the inputs, the ladder, the
output and the options, and the command line overrides it::

    [inputs]
    paths = ["music/", "s3://masters/album/01.flac"]  # files, folders, s3:// objects
    catalogues = ["catalogue.csv"]                     # --catalogue files

    [output]
    out = "out"                       # a folder or s3://BUCKET/PREFIX (--out)
    staging = "/var/tmp/cadenza"      # --staging, for s3:// output

    [ladder]
    preset = "music"                  # or file = "ladder.toml", or [[ladder.rung]] tables

    [options]                         # any other flag of `cadenza package`, by its long
    segment_duration = 4              # name with - or _: jobs, track_timeout,
    single_file = false               # single_file, force, shard, cluster, ...

Relative paths are read from the config file's folder, not the working directory, so
a config runs the same from anywhere. Values go through the same checks as the flags
they stand for. A key the file does not know is an error naming the key and the file
(a misspelt option must not be silently ignored); so is a value of the wrong type.

How flags override the file: the file's values become the parser's defaults
(:func:`apply_config_defaults`), so any flag given on the command line wins. INPUTs or
``--catalogue`` on the command line replace the file's inputs as a whole.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cadenza.manifests.errors import InvalidLadderError
from cadenza.manifests.ladder import Ladder, ladder_from_document
from cadenza.packager.errors import PackagerError
from cadenza.store.s3url import is_s3_url

SECTIONS: Final = ("inputs", "output", "ladder", "options")
INPUT_KEYS: Final = ("paths", "catalogues")
OUTPUT_KEYS: Final = ("out", "staging")
# Flags that only the command line sets, or that a section above covers.
NOT_OPTIONS: Final = frozenset(
    {"help", "config", "inputs", "catalogue", "out", "staging", "ladder"}
)
# Where the file's inputs go, apart from the command line's (see gather_inputs).
CONFIG_INPUTS: Final = "config_inputs"
CONFIG_CATALOGUES: Final = "config_catalogues"


class ConfigError(PackagerError):
    """A config file that cannot be used: ``key`` is its dotted name, or None for the file."""

    def __init__(self, path: Path, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key!r}" if key else str(path)
        super().__init__(f"{where}: {reason}")


def _table(path: Path, key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, key, "must be a table ([" + key + "])")
    return value


def _string_list(path: Path, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(path, key, "must be a list of non-empty strings")
    return list(value)


def _string(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, key, "must be a non-empty string")
    return value


def _unknown(path: Path, section: str, table: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(path, f"{section}.{key}", f"unknown key (known: {', '.join(known)})")


class _Resolver:
    """Relative local paths are the config file's folder's; s3:// URLs stay as they are."""

    def __init__(self, path: Path) -> None:
        self.base = path.parent

    def __call__(self, text: str) -> str:
        if is_s3_url(text):
            return text
        candidate = Path(text).expanduser()
        return str(candidate if candidate.is_absolute() else self.base / candidate)


def _options_by_name(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's optional flags that a config may set, by dest (``track_timeout``)."""
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in NOT_OPTIONS
    }


def _option_value(path: Path, key: str, action: argparse.Action, value: object) -> object:
    """``value`` checked as the flag would check its text."""
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(path, key, "must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(path, key, "must be a string or a number")
    convert: Callable[[str], object] | None = action.type  # type: ignore[assignment]
    try:
        converted = convert(str(value)) if convert is not None else str(value)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(path, key, str(exc) or "invalid value") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(path, key, f"must be one of {', '.join(map(str, action.choices))}")
    return converted


def _ladder(path: Path, table: Mapping[str, Any], resolve: _Resolver) -> str | Ladder:
    given = [k for k in ("preset", "file", "rung") if k in table]
    _unknown(path, "ladder", table, ("preset", "file", "rung", "name"))
    if len(given) != 1:
        raise ConfigError(path, "ladder", "give exactly one of preset, file or [[ladder.rung]]")
    (kind,) = given
    if kind == "preset":
        return _string(path, "ladder.preset", table["preset"])
    if kind == "file":
        return resolve(_string(path, "ladder.file", table["file"]))
    try:
        return ladder_from_document(dict(table), default_name=path.stem)
    except InvalidLadderError as exc:
        raise ConfigError(path, f"ladder.{exc.where}", exc.reason) from None


def read_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, object]:
    """The argparse defaults a config file sets: dest -> value, checked."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    resolve = _Resolver(path)
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(path, key, f"unknown section (known: {', '.join(SECTIONS)})")
    values: dict[str, object] = {}
    inputs = _table(path, "inputs", data.get("inputs", {}))
    _unknown(path, "inputs", inputs, INPUT_KEYS)
    if "paths" in inputs:
        paths = _string_list(path, "inputs.paths", inputs["paths"])
        values[CONFIG_INPUTS] = [resolve(p) for p in paths]
    if "catalogues" in inputs:
        catalogues = _string_list(path, "inputs.catalogues", inputs["catalogues"])
        values[CONFIG_CATALOGUES] = [Path(resolve(c)) for c in catalogues]
    output = _table(path, "output", data.get("output", {}))
    _unknown(path, "output", output, OUTPUT_KEYS)
    if "out" in output:
        values["out"] = resolve(_string(path, "output.out", output["out"]))
    if "staging" in output:
        values["staging"] = Path(resolve(_string(path, "output.staging", output["staging"])))
    if "ladder" in data:
        values["ladder"] = _ladder(path, _table(path, "ladder", data["ladder"]), resolve)
    options = _table(path, "options", data.get("options", {}))
    known = _options_by_name(parser)
    for key, value in options.items():
        dest = key.replace("-", "_")
        if dest not in known:
            raise ConfigError(
                path, f"options.{key}", f"unknown option (known: {', '.join(sorted(known))})"
            )
        values[dest] = _option_value(path, f"options.{key}", known[dest], value)
    return values


def config_path(argv: Sequence[str]) -> Path | None:
    """The ``--config FILE`` among the arguments, before they are parsed in full."""
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--config", type=Path)
    known, _rest = finder.parse_known_args(list(argv))
    found: Path | None = known.config
    return found


def apply_config_defaults(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Make the ``--config`` file's values the parser's defaults, so flags override them.

    A bad file ends the command with a usage error (status 2) naming the file and key.
    """
    path = config_path(argv)
    if path is None:
        return
    try:
        parser.set_defaults(**read_config(path, parser))
    except ConfigError as exc:
        parser.error(str(exc))
