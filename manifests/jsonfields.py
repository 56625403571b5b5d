"""Strict readers of ``presentation.json`` fields: each returns the field as the model
wants it, or raises :class:`InvalidPresentationError` naming the field at fault
(``where`` + ``key``).  Used by :mod:`cadenza.manifests.jsonio`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cadenza.manifests.errors import InvalidPresentationError
from cadenza.manifests.model import ByteRange

T = TypeVar("T")


def read_field(
    d: Mapping[str, Any], key: str, kind: type[T], where: str, optional: bool = False
) -> T:
    if key not in d or d[key] is None:
        if optional:
            return None  # type: ignore[return-value]
        raise InvalidPresentationError(f"{where}{key}", "missing")
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidPresentationError(f"{where}{key}", f"expected {kind.__name__}, got {value!r}")
    return value


def read_count(d: Mapping[str, Any], key: str, where: str, optional: bool = False) -> int:
    value = read_field(d, key, int, where, optional)
    if value is not None and value < 0:
        raise InvalidPresentationError(f"{where}{key}", f"must not be negative, got {value}")
    return value


def read_positive(d: Mapping[str, Any], key: str, where: str) -> int:
    value = read_count(d, key, where)
    if value == 0:
        raise InvalidPresentationError(f"{where}{key}", "must be positive")
    return value


def read_mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidPresentationError(field, "expected an object")
    return value


def read_byte_range(value: object, field: str) -> ByteRange | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise InvalidPresentationError(field, "expected [offset_bytes, length_bytes]")
    return ByteRange(value[0], value[1])


def read_enum(value: object, kind: Callable[[str], T], field: str) -> T:
    try:
        return kind(str(value))
    except ValueError:
        raise InvalidPresentationError(field, f"unknown value {value!r}") from None


def read_hex(value: object, field: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPresentationError(field, "expected a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidPresentationError(field, "expected a hex string") from None
