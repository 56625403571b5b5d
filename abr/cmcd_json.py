"""CMCD keys given as a JSON object (CTA-5004's JSON transmission mode: dash.js's JSON
mode, or a hand-made beacon), checked by the same rules as the text form
(:mod:`cadenza.abr.cmcd`): key syntax, value types per key, the same bounds."""

from __future__ import annotations

import math
from collections.abc import Mapping

from cadenza.abr.cmcd import (
    KEY_PATTERN,
    MAX_DECIMAL,
    MAX_INTEGER,
    MAX_LIST_ITEMS,
    BareItem,
    Cmcd,
    CmcdValue,
    InvalidValueError,
    Malformed,
    Token,
    check_type,
)
from cadenza.abr.cmcd_keys import KEYS, KeySpec, Kind


def from_json_object(data: Mapping[str, object]) -> Cmcd:
    """CMCD keys given as a JSON object (dash.js's JSON mode, or a hand-made beacon)."""
    values: dict[str, CmcdValue] = {}
    malformed: list[Malformed] = []
    for key, raw in data.items():
        try:
            if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
                raise InvalidValueError("bad key")
            value = _json_value(key, raw)
            values[key] = check_type(key, value)
        except InvalidValueError as exc:
            malformed.append(Malformed(str(key)[:32], str(exc)))
    return Cmcd(values, tuple(malformed))


def _json_value(key: str, raw: object) -> CmcdValue:
    spec = KEYS.get(key)
    if isinstance(raw, list):
        if len(raw) > MAX_LIST_ITEMS:
            raise InvalidValueError(f"list longer than {MAX_LIST_ITEMS} items")
        return tuple(_json_bare(spec, item) for item in raw)
    return _json_bare(spec, raw)


def _json_bare(spec: KeySpec | None, raw: object) -> BareItem:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        # JSON integers have no bound; RFC 8941's have 15 digits, as the text form.
        if abs(raw) > MAX_INTEGER:
            raise InvalidValueError(f"integer out of range (at most {MAX_INTEGER})")
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw) or abs(raw) >= MAX_DECIMAL:
            raise InvalidValueError("number out of range")
        if spec is not None and spec.kind is Kind.INTEGER and raw.is_integer():
            return int(raw)
        return raw
    if isinstance(raw, str):
        if len(raw) > 1024:
            raise InvalidValueError("string longer than 1024 characters")
        # JSON has no token type: a string is a token where the key wants one.
        if spec is not None and spec.kind is Kind.TOKEN:
            return Token(raw)
        return raw
    raise InvalidValueError(f"unsupported JSON type {type(raw).__name__}")
