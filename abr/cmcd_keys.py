"""The CMCD keys (CTA-5004, v1 and the v2 additions), their value types, and one
parsed payload.

CMCD is a Structured Field Dictionary (RFC 8941).  Values are Python ``int``,
``float`` (decimals), ``str`` (quoted strings), :class:`Token`, ``bool`` and
``tuple`` (v2 inner lists).  :mod:`cadenza.abr.cmcd` parses text and JSON into
a :class:`Cmcd`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias


class Token(str):
    """An RFC 8941 token (``ot=v``, ``sf=d``): a ``str`` that remembers it was bare."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Token({str(self)!r})"


BareItem: TypeAlias = int | float | str | bool
CmcdValue: TypeAlias = BareItem | tuple[BareItem, ...]


class Kind(enum.Enum):
    INTEGER = "integer"
    DECIMAL = "decimal"  # an integer is accepted too
    STRING = "string"
    TOKEN = "token"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class KeySpec:
    kind: Kind
    # CMCD v2 lets these carry an inner list (one value per object in a request).
    list_ok: bool = False


# The keys CTA-5004 (v1, and the v2 additions players send) defines, with
# their types; integers are kb/s or ms as the spec says.
KEYS: Final[Mapping[str, KeySpec]] = {
    # request / object / status / session (v1)
    "br": KeySpec(Kind.INTEGER, list_ok=True),
    "bl": KeySpec(Kind.INTEGER, list_ok=True),
    "bs": KeySpec(Kind.BOOLEAN),
    "cid": KeySpec(Kind.STRING),
    "d": KeySpec(Kind.INTEGER),
    "dl": KeySpec(Kind.INTEGER),
    "mtp": KeySpec(Kind.INTEGER, list_ok=True),
    "nor": KeySpec(Kind.STRING, list_ok=True),
    "nrr": KeySpec(Kind.STRING),
    "ot": KeySpec(Kind.TOKEN),
    "pr": KeySpec(Kind.DECIMAL),
    "rtp": KeySpec(Kind.INTEGER),
    "sf": KeySpec(Kind.TOKEN),
    "sid": KeySpec(Kind.STRING),
    "st": KeySpec(Kind.TOKEN),
    "su": KeySpec(Kind.BOOLEAN),
    "tb": KeySpec(Kind.INTEGER, list_ok=True),
    "v": KeySpec(Kind.INTEGER),
    # v2
    "ab": KeySpec(Kind.INTEGER, list_ok=True),
    "bsd": KeySpec(Kind.INTEGER),
    "cdn": KeySpec(Kind.STRING),
    "cs": KeySpec(Kind.TOKEN),
    "df": KeySpec(Kind.INTEGER),
    "e": KeySpec(Kind.TOKEN),
    "lab": KeySpec(Kind.INTEGER, list_ok=True),
    "lb": KeySpec(Kind.INTEGER, list_ok=True),
    "ltc": KeySpec(Kind.INTEGER),
    "msd": KeySpec(Kind.INTEGER),
    "pb": KeySpec(Kind.INTEGER, list_ok=True),
    "pt": KeySpec(Kind.INTEGER),
    "rc": KeySpec(Kind.INTEGER),
    "sn": KeySpec(Kind.INTEGER),
    "sta": KeySpec(Kind.TOKEN),
    "tab": KeySpec(Kind.INTEGER, list_ok=True),
    "tbl": KeySpec(Kind.INTEGER, list_ok=True),
    "tpb": KeySpec(Kind.INTEGER, list_ok=True),
    "ts": KeySpec(Kind.INTEGER),
    "ttfb": KeySpec(Kind.INTEGER),
    "ttfbb": KeySpec(Kind.INTEGER),
    "ttlb": KeySpec(Kind.INTEGER),
    "url": KeySpec(Kind.STRING),
}

HEADER_NAMES: Final = ("CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session")


@dataclass(frozen=True, slots=True)
class Malformed:
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Cmcd:
    """One parsed CMCD payload."""

    values: Mapping[str, CmcdValue] = field(default_factory=dict)
    malformed: tuple[Malformed, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.values and not self.malformed

    def integer(self, key: str) -> int | None:
        """The key as an int (the first item of a v2 list), or None."""
        value = self.values.get(key)
        if type(value) is int:  # the common case, first (a bool's type is bool)
            return value
        if isinstance(value, tuple):
            value = value[0] if value else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return int(value)

    def string(self, key: str) -> str | None:
        value = self.values.get(key)
        if type(value) is str or value is None:  # the common cases, first
            return value
        if isinstance(value, tuple):
            value = value[0] if value else None
        return value if isinstance(value, str) else None

    def flag(self, key: str) -> bool:
        return self.values.get(key) is True
