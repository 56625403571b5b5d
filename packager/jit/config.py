"""The just-in-time serving options (``cadenza serve ROOT --sources DIR``): a frozen
:class:`JitOptions`, read like the origin's settings (flags, then ``CADENZA_*``
environment variables, then the ``[jit]`` table of the ``--config`` TOML file, then
defaults), every field documented in its metadata, from which the JIT settings
table of ``docs/operating.md`` is generated (:func:`render_jit_table`).

Kept free of PyAV and numpy: ``cadenza serve`` reads these before it knows whether
it will build anything.
"""

from __future__ import annotations

import dataclasses
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from cadenza.manifests.ladder import DEFAULT_PRESET
from cadenza.packager.args import MAX_SEGMENT_S, MIN_SEGMENT_S
from cadenza.packager.segmenter import DEFAULT_SEGMENT_DURATION

DOC_KEY: Final = "cadenza-jit"
TOML_TABLE: Final = "jit"
TABLE_START: Final = (
    "<!-- jit-settings:start (python -m cadenza.packager.jit.config --write docs/operating.md) -->"
)
TABLE_END: Final = "<!-- jit-settings:end -->"
DEFAULT_SOURCE_CACHE: Final = str(Path(tempfile.gettempdir()) / "cadenza-jit-sources")


class JitConfigError(Exception):
    """An invalid JIT setting, named with its value and why."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"setting {name}={value!r}: {reason}")


def _option(
    default: Any, meaning: str, *, flag: str | None = None, shown: str | None = None
) -> Any:
    return field(default=default, metadata={DOC_KEY: (meaning, flag, shown)})


@dataclass(frozen=True, slots=True)
class JitOptions:
    """How ``cadenza serve --sources`` builds and keeps just-in-time tracks."""

    sources: str = _option(
        "",
        "folder or `s3://bucket/prefix` of source files served as tracks (id: the file's "
        "stem, reduced as `cadenza package` reduces it) while ROOT holds no packaged copy",
        flag="--sources",
        shown="(none: JIT off)",
    )
    jit_ladder: str = _option(
        DEFAULT_PRESET,
        "ladder preset or `.toml`/`.json` file the JIT tracks are planned with (the "
        "batch packager's default, so a promoted track matches)",
    )
    jit_segment_duration: Fraction = _option(  # noqa: RUF009 (a Fraction is immutable)
        DEFAULT_SEGMENT_DURATION, "target segment duration in seconds (as `cadenza package`)"
    )
    jit_workers: int = _option(2, "threads encoding JIT segments (off the event loop)")
    jit_queue_max: int = _option(
        32, "builds waiting for a worker; one more is answered `503` with `Retry-After`"
    )
    jit_negative_ttl_s: float = _option(
        60.0, "a source that failed to probe or build is not tried again for this long"
    )
    jit_listing_ttl_s: float = _option(
        5.0, "the sources folder's listing is read again after this long"
    )
    jit_promote_after_requests: int = _option(
        200,
        "segment reads of a JIT track that reach storage (hot-cache misses) before it is "
        "packaged whole into ROOT in the background (0: never)",
    )
    jit_writeback: bool = _option(
        True, "write every JIT-built init and media segment back to the write-back area"
    )
    jit_writeback_dir: str = _option(
        "",
        "a local folder for the write-back area (built segments, each track's lineage) "
        "instead of ROOT's `.jit/` (a folder, or a prefix of an `s3://` ROOT)",
        shown="`<ROOT>/.jit`",
    )
    jit_read_ahead: bool = _option(
        True,
        "build in the background, on an idle thread only, what a player reads next: a "
        "rendition's init and first segment after its playlist, segment n+1 after n",
    )
    jit_built_cache_bytes: int = _option(
        32 * 1024 * 1024, "recently built objects kept beside the hot cache (HEAD then GET)"
    )
    jit_source_cache_dir: str = _option(
        DEFAULT_SOURCE_CACHE,
        "`s3://` sources are downloaded here once (keyed by ETag)",
        shown="`$TMPDIR/cadenza-jit-sources`",
    )
    jit_source_cache_max_bytes: int = _option(
        4 * 1024**3, "size of that download cache (least recently used removed first)"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.sources)


FIELDS: Final = {f.name: f for f in dataclasses.fields(JitOptions)}
_POSITIVE: Final = frozenset({"jit_workers", "jit_built_cache_bytes", "jit_source_cache_max_bytes"})


def env_name(name: str) -> str:
    """The environment variable of a field: ``CADENZA_JIT_SOURCES``, ``CADENZA_JIT_WORKERS``."""
    return "CADENZA_" + (name if name.startswith("jit_") else f"jit_{name}").upper()


def flag_name(name: str) -> str:
    meaning_flag = FIELDS[name].metadata[DOC_KEY][1]
    return str(meaning_flag or "--" + name.replace("_", "-"))


def _coerce(name: str, value: object) -> object:
    kind = FIELDS[name].type
    text = str(value).strip()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise JitConfigError(name, value, "expected true or false")
    if kind == "Fraction":
        try:
            seconds = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise JitConfigError(name, value, "expected seconds (4, 3.2, 96/25)") from None
        if not MIN_SEGMENT_S <= seconds <= MAX_SEGMENT_S:
            raise JitConfigError(
                name, value, f"must be between {float(MIN_SEGMENT_S)} and {float(MAX_SEGMENT_S)}"
            )
        return seconds
    try:
        if kind == "int":
            number = int(text)
            if number < 0 or (number == 0 and name in _POSITIVE):
                raise JitConfigError(name, value, "must be positive")
            return number
        if kind == "float":
            seconds_f = float(text)
            if not seconds_f >= 0:
                raise JitConfigError(name, value, "must be 0 or more")
            return seconds_f
    except ValueError:
        raise JitConfigError(name, value, f"expected {kind}") from None
    return text


def jit_table(config_file: Path | None) -> dict[str, object]:
    """The ``[jit]`` table of the TOML file (empty without one); unknown keys are errors."""
    if config_file is None:
        return {}
    try:
        data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise JitConfigError("config", str(config_file), str(exc)) from exc
    table = data.get(TOML_TABLE, {})
    if not isinstance(table, dict):
        raise JitConfigError(TOML_TABLE, "...", f"expected a [{TOML_TABLE}] table")
    for key in table:
        if key not in FIELDS:
            raise JitConfigError(key, "...", f"unknown setting in [{TOML_TABLE}] of {config_file}")
    return dict(table)


def load_jit_options(
    cli: Mapping[str, object],
    env: Mapping[str, str],
    config_file: Path | None = None,
) -> JitOptions:
    """Flags, then the environment, then the ``[jit]`` table, then the defaults."""
    values: dict[str, object] = dict(jit_table(config_file))
    for name in FIELDS:
        given = env.get(env_name(name))
        if given:
            values[name] = given
    for name, value in cli.items():
        if value is not None and name in FIELDS:
            values[name] = value
    return JitOptions(**{n: _coerce(n, v) for n, v in values.items()})  # type: ignore[arg-type]


def _shown_default(item: dataclasses.Field[Any]) -> str:
    shown = item.metadata[DOC_KEY][2]
    if shown is not None:
        return str(shown)
    value = item.default
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Fraction):
        return str(value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def render_jit_table() -> str:
    """The markdown table of every :class:`JitOptions` field."""
    rows = [
        "| Setting (`[jit]` in TOML) | Flag | Environment | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for name, item in FIELDS.items():
        meaning = item.metadata[DOC_KEY][0]
        rows.append(
            f"| `{name}` | `{flag_name(name)}` | `{env_name(name)}` | "
            f"{_shown_default(item)} | {meaning} |"
        )
    return "\n".join(rows) + "\n"


def embed_jit_table(document: str) -> str:
    """``document`` with the text between the JIT table's markers regenerated."""
    head, start, rest = document.partition(TABLE_START)
    _old, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"the document has no {TABLE_START} ... {TABLE_END} markers")
    return f"{head}{TABLE_START}\n{render_jit_table()}{TABLE_END}{tail}"


if __name__ == "__main__":  # print the table, or with --write FILE regenerate it there
    import sys

    if sys.argv[1:2] == ["--write"] and len(sys.argv) == 3:
        target = Path(sys.argv[2])
        target.write_text(embed_jit_table(target.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(render_jit_table(), end="")
