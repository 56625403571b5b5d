"""The settings table of ``docs/operating.md``, generated from the metadata of
:class:`cadenza.origin.settings.Settings` (never written by hand)::

    python -m cadenza.origin.settings_doc --markdown                # print the table
    python -m cadenza.origin.settings_doc --write docs/operating.md  # rewrite it in place

``tests/origin/test_settings_doc.py`` fails when the document's table differs from
the generated one.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cadenza.origin.setting_field import describe
from cadenza.origin.settings import Settings, env_names

_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
TABLE_START = (
    "<!-- settings:start (python -m cadenza.origin.settings_doc --write docs/operating.md) -->"
)
TABLE_END = "<!-- settings:end -->"


def _shown_default(item: dataclasses.Field[Any]) -> str:
    doc = describe(item)
    if doc.default_text is not None:
        return doc.default_text
    value = item.default
    if value is None or value == ():
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if isinstance(value, str) else str(value)


def _shown_env(name: str) -> str:
    if describe(_FIELDS[name]).toml_only:
        return "(TOML only)"
    first, *aliases = env_names(name)
    also = f" (also `{'`, `'.join(aliases)}`)" if aliases else ""
    return f"`{first}`{also}"


def render_settings_table() -> str:
    """Every setting, in declaration order, as a markdown table."""
    lines = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for name, item in _FIELDS.items():
        cells = (name, _shown_env(name), _shown_default(item), describe(item).meaning)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def embed_settings_table(document: str) -> str:
    """``document`` with the text between its table markers replaced by the table."""
    start, end = document.find(TABLE_START), document.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START!r} ... {TABLE_END!r} markers")
    head = document[: start + len(TABLE_START)]
    return f"{head}\n{render_settings_table()}{document[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cadenza.origin.settings_doc", description="The origin's settings table."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the table")
    action.add_argument(
        "--write", type=Path, metavar="FILE", help="rewrite the table between FILE's markers"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(render_settings_table())
        return 0
    try:
        text = args.write.read_text(encoding="utf-8")
        args.write.write_text(embed_settings_table(text), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"{args.write}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
