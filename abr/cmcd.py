"""Common Media Client Data (CTA-5004, CMCD v1 and v2): a pure, tolerant parser.

CMCD is a Structured Field Dictionary (RFC 8941) sent three ways: the ``CMCD``
query argument, the four ``CMCD-Request``/``-Object``/``-Status``/``-Session``
headers, and (v2 event and response reporting) a POST body of one
dictionary per line.  Parsing never raises on a player's data: a member that
does not parse, or whose value has the wrong type for a key the spec defines
(:data:`~cadenza.abr.cmcd_keys.KEYS`), is dropped and reported in
:attr:`Cmcd.malformed` so the caller can count it.  Keys the spec does not
define are kept as they came.  The HTTP edge hands the query value and the
headers in; nothing here reads a request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from cadenza.abr.cmcd_keys import (
    HEADER_NAMES,
    KEYS,
    BareItem,
    Cmcd,
    CmcdValue,
    KeySpec,
    Kind,
    Malformed,
    Token,
)

__all__ = [
    "HEADER_NAMES",
    "KEYS",
    "KEY_PATTERN",
    "MAX_DECIMAL",
    "MAX_INTEGER",
    "MAX_LIST_ITEMS",
    "MAX_MEMBERS",
    "MAX_TEXT_CHARS",
    "BareItem",
    "Cmcd",
    "CmcdValue",
    "InvalidValueError",
    "KeySpec",
    "Kind",
    "Malformed",
    "Token",
    "check_type",
    "merge",
    "parse_cmcd",
    "parse_cmcd_lines",
    "parse_request_cmcd",
]

# Bounds that keep a hostile value from costing memory or CPU.
MAX_TEXT_CHARS: Final = 8192
MAX_MEMBERS: Final = 128
MAX_LIST_ITEMS: Final = 64
# RFC 8941 number ranges (15 integer digits; decimals 12 before the point),
# applied to JSON beacons too: a 400-digit "mtp" must not reach arithmetic.
MAX_INTEGER: Final = 999_999_999_999_999
MAX_DECIMAL: Final = 1e12

# RFC 8941 keys are lower case; CMCD custom keys in the spec's own examples
# (``com.example-myNumericKey``) are not, so upper case is accepted.
KEY_PATTERN: Final = re.compile(r"[A-Za-z*][A-Za-z0-9_\-.*]*")
_INT_RE: Final = re.compile(r"-?[0-9]{1,15}")
_DEC_RE: Final = re.compile(r"-?[0-9]{1,12}\.[0-9]{1,3}")
_TOKEN_RE: Final = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*")
# One member in a common shape: key, or key=string|decimal|integer|token|boolean,
# with no parameters, lists or escapes.  Its groups give the same value as the
# full parser (a property test holds them equal); ``parse_cmcd(fast=False)``
# turns it off.
_PLAIN_MEMBER: Final = re.compile(
    r"[ \t]*([A-Za-z*][A-Za-z0-9_\-.*]*)"
    r'(?:=(?:"([ !#-\[\]-~]*)"'
    r"|(-?[0-9]{1,12}\.[0-9]{1,3})"
    r"|(-?[0-9]{1,15})"
    r"|([A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*)"
    r"|\?([01])))?[ \t]*"
)


class InvalidValueError(Exception):
    pass


def _split_members(text: str) -> list[str]:
    """Split at top-level commas, respecting quoted strings and parentheses."""
    members: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for index, char in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            members.append(text[start:index])
            start = index + 1
    members.append(text[start:])
    return members


def _parse_string(text: str) -> tuple[str, str]:
    """A quoted string at the start of ``text``; returns (value, rest)."""
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text) or text[index + 1] not in '"\\':
                raise InvalidValueError("bad escape in string")
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(out), text[index + 1 :]
        if not " " <= char <= "~":
            raise InvalidValueError("string holds a character outside printable ASCII")
        out.append(char)
        index += 1
    raise InvalidValueError("unterminated string")


def _parse_bare(text: str) -> tuple[BareItem, str]:
    """One bare item at the start of ``text``; returns (item, rest)."""
    if not text:
        raise InvalidValueError("missing value")
    if text[0] == '"':
        return _parse_string(text)
    if text[0] == "?":
        if text[1:2] in ("0", "1"):
            return text[1] == "1", text[2:]
        raise InvalidValueError("boolean must be ?0 or ?1")
    if (match := _DEC_RE.match(text)) is not None:
        return float(match.group()), text[match.end() :]
    if (match := _INT_RE.match(text)) is not None:
        rest = text[match.end() :]
        if rest[:1].isdigit() or rest[:1] == ".":
            raise InvalidValueError("number too long or too precise")
        return int(match.group()), rest
    if (match := _TOKEN_RE.match(text)) is not None:
        return Token(match.group()), text[match.end() :]
    raise InvalidValueError(f"cannot parse value starting {text[:10]!r}")


def _skip_params(text: str) -> str:
    """Drop RFC 8941 parameters (``;key=value``): CMCD defines none."""
    while text.startswith(";"):
        text = text[1:].lstrip(" ")
        match = KEY_PATTERN.match(text)
        if match is None:
            raise InvalidValueError("bad parameter key")
        text = text[match.end() :]
        if text.startswith("="):
            _, text = _parse_bare(text[1:])
    return text


def _parse_value(text: str) -> CmcdValue:
    if text.startswith("("):
        items: list[BareItem] = []
        rest = text[1:].lstrip(" ")
        while not rest.startswith(")"):
            if len(items) >= MAX_LIST_ITEMS:
                raise InvalidValueError(f"inner list longer than {MAX_LIST_ITEMS} items")
            item, rest = _parse_bare(rest)
            rest = _skip_params(rest)
            items.append(item)
            if not rest.startswith((" ", ")")):
                raise InvalidValueError("inner list items must be separated by spaces")
            rest = rest.lstrip(" ")
        value: CmcdValue = tuple(items)
        rest = rest[1:]
    else:
        value, rest = _parse_bare(text)
    if _skip_params(rest).strip(" \t"):
        raise InvalidValueError("trailing characters after value")
    return value


def check_type(key: str, value: CmcdValue) -> CmcdValue:
    spec = KEYS.get(key)
    if spec is None:
        return value
    if isinstance(value, tuple):
        if not spec.list_ok:
            raise InvalidValueError(f"{key} takes a single value, not a list")
        return tuple(_check_item(key, spec.kind, item) for item in value)
    return _check_item(key, spec.kind, value)


# The Python types each kind accepts (bool is not an int here: exact types).
_TYPES_OF: Final[Mapping[Kind, tuple[type, ...]]] = {
    Kind.INTEGER: (int,),
    Kind.DECIMAL: (int, float),
    Kind.STRING: (str,),
    Kind.TOKEN: (Token,),
    Kind.BOOLEAN: (bool,),
}


def _check_item(key: str, kind: Kind, item: BareItem) -> BareItem:
    if type(item) not in _TYPES_OF[kind]:
        article = "an" if kind is Kind.INTEGER else "a"
        raise InvalidValueError(f"{key} must be {article} {kind.value}")
    if kind is Kind.INTEGER and item < 0:  # type: ignore[operator]
        raise InvalidValueError(f"{key} must not be negative")
    return item


def _parse_member(member: str, fast: bool) -> tuple[str, CmcdValue] | Malformed:
    """One member (``key`` or ``key=value``, parameters dropped), type-checked."""
    if fast and (whole := _PLAIN_MEMBER.fullmatch(member)) is not None:
        # The common shapes in one regex match; anything else (lists,
        # parameters, escapes, errors) takes the full parser below.
        key, text, decimal, integer, token, boolean = whole.groups()
        if text is not None:
            value: CmcdValue = text
        elif integer is not None:
            value = int(integer)
        elif decimal is not None:
            value = float(decimal)
        elif token is not None:
            value = Token(token)
        else:
            value = boolean != "0"  # no "=": true (CTA-5004 5.1)
        try:
            return key, check_type(key, value)
        except InvalidValueError as exc:
            return Malformed(key, str(exc))
    member = member.strip(" \t")
    match = KEY_PATTERN.match(member)
    key = match.group() if match else member[:32]
    try:
        if match is None:
            raise InvalidValueError("bad key")
        rest = member[match.end() :]
        if rest.startswith("="):
            value = _parse_value(rest[1:])
        else:
            if _skip_params(rest).strip():
                raise InvalidValueError("expected '=' after key")
            value = True
        return key, check_type(key, value)
    except InvalidValueError as exc:
        return Malformed(key, str(exc))


# Members parsed lately, by their text (a player repeats most of its members from
# request to request: ``br``, ``cid``, ``d``, ``ot``, ``sid``...).  Only short
# members are kept, and the table starts afresh when full, so its size is bounded.
_MEMBERS_KEPT: Final = 4096
_MEMBER_MAX_CHARS: Final = 64
_members: dict[str, tuple[str, CmcdValue] | Malformed] = {}
_NO_MEMBERS: Final[dict[str, tuple[str, CmcdValue] | Malformed]] = {}  # fast=False
# Keys whose plain non-negative integer needs no more checking than its digits.
_NUMERIC_KEYS: Final = frozenset(
    key for key, spec in KEYS.items() if spec.kind in (Kind.INTEGER, Kind.DECIMAL)
)


def _new_member(member: str) -> tuple[str, CmcdValue] | Malformed:
    """:func:`_parse_member` (fast) of a member not in the table, kept there if
    short; a defined numeric key with a plain integer (``bl=21500``) is read
    without a regex."""
    key, equals, digits = member.partition("=")
    parsed: tuple[str, CmcdValue] | Malformed
    if (
        equals
        and key in _NUMERIC_KEYS
        and 0 < len(digits) <= 15
        and digits.isdigit()
        and digits.isascii()
    ):
        parsed = key, int(digits)
    else:
        parsed = _parse_member(member, True)
    if len(member) <= _MEMBER_MAX_CHARS:
        if len(_members) >= _MEMBERS_KEPT:
            _members.clear()
        _members[member] = parsed
    return parsed


def parse_cmcd(text: str, *, fast: bool = True) -> Cmcd:
    """Parse one CMCD dictionary (the decoded query value, or one header).

    A key with no ``=`` is boolean true (CTA-5004 5.1: ``bs``, ``su``).  When
    a key repeats, the last value wins, as RFC 8941 dictionaries specify.
    ``fast=False`` parses every member with the full parser (for tests: the
    result must not change).
    """
    values: dict[str, CmcdValue] = {}
    malformed: list[Malformed] = []
    if len(text) > MAX_TEXT_CHARS:
        return Cmcd({}, (Malformed("*", f"longer than {MAX_TEXT_CHARS} characters"),))
    if not text.strip():
        return Cmcd()
    # A plain split is exact unless a comma sits inside a string or a list.
    # Without lists and escapes, quotes alternate open/close: the text between
    # quotes 1 and 2, 3 and 4... is inside strings (an odd count leaves one open).
    members = text.split(",")
    if not fast or "(" in text or "\\" in text:
        members = _split_members(text)
    elif '"' in text:
        pieces = text.split('"')
        if len(pieces) % 2 == 0 or "," in "".join(pieces[1::2]):
            members = _split_members(text)
    if len(members) > MAX_MEMBERS:
        return Cmcd({}, (Malformed("*", f"more than {MAX_MEMBERS} keys"),))
    known = (_members if fast else _NO_MEMBERS).get
    for member in members:
        parsed = known(member)
        if parsed is None:
            parsed = _new_member(member) if fast else _parse_member(member, False)
        if isinstance(parsed, tuple):
            key, value = parsed
            values[key] = value
        else:
            malformed.append(parsed)
    return Cmcd(values, tuple(malformed))


def merge(parts: Iterable[Cmcd]) -> Cmcd:
    values: dict[str, CmcdValue] = {}
    malformed: list[Malformed] = []
    for part in parts:
        values.update(part.values)
        malformed.extend(part.malformed)
    return Cmcd(values, tuple(malformed))


def parse_request_cmcd(query_value: str | None, headers: Mapping[str, str]) -> Cmcd:
    """CMCD from a request: the ``CMCD`` query argument and the four headers."""
    parts = [parse_cmcd(headers[name]) for name in HEADER_NAMES if name in headers]
    if query_value is not None:
        parts.append(parse_cmcd(query_value))
    return parts[0] if len(parts) == 1 else merge(parts)


def parse_cmcd_lines(body: str) -> list[Cmcd]:
    """A v2 event/response-mode body (``application/cmcd``): one dictionary a line."""
    return [parse_cmcd(line) for line in body.splitlines() if line.strip()]
