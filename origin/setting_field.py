"""How an origin setting is declared: a dataclass field that carries its own
documentation (:class:`SettingDoc`), from which ``docs/operating.md``'s settings table is
generated (:mod:`cadenza.origin.settings_doc`) and the environment and TOML names are
derived (:mod:`cadenza.origin.settings`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")
DOC_KEY = "cadenza"


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """What the settings table says about one field, and the other names it is read
    under.  ``CADENZA_<NAME>`` is always read first; ``env_aliases`` after it, in
    order (the first one set wins).  ``toml_aliases`` are older TOML keys: a file
    that gives both spellings gets the field's own name's value."""

    meaning: str
    default_text: str | None = None  # None: the default value itself
    env_aliases: tuple[str, ...] = ()
    toml_aliases: tuple[str, ...] = ()
    toml_only: bool = False  # the environment cannot hold it (a list of tables)


def setting(
    default: _T,
    meaning: str,
    *,
    default_text: str | None = None,
    env_aliases: tuple[str, ...] = (),
    toml_aliases: tuple[str, ...] = (),
    toml_only: bool = False,
    secret: bool = False,
) -> _T:
    """A dataclass field with its documentation; a secret is kept out of ``repr``."""
    doc = SettingDoc(meaning, default_text, env_aliases, toml_aliases, toml_only)
    return field(default=default, repr=not secret, metadata={DOC_KEY: doc})


def describe(item: dataclasses.Field[Any]) -> SettingDoc:
    """The documentation of one field of :class:`Settings`."""
    doc = item.metadata.get(DOC_KEY)
    if not isinstance(doc, SettingDoc):
        raise TypeError(f"Settings.{item.name} is not declared with setting(...)")
    return doc
