"""The secret settings' values (``signing_keys``, ``key_encryption_key``,
``admin_token``): read from the environment, a TOML file or a flag, checked, and
never echoed: a :class:`~cadenza.origin.errors.SettingsError` about one shows
:data:`HIDDEN` instead of the value (see origin/auth.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from cadenza.origin.errors import SettingsError

MIN_SECRET_CHARS: Final = 16
HIDDEN: Final = "(hidden)"  # what a SettingsError shows instead of a secret
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")


def signing_keys(value: object) -> tuple[str, ...]:
    """A comma-separated string (environment) or a list (TOML); never echoed."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(k, str) for k in items):
        raise SettingsError("signing_keys", HIDDEN, "expected comma-separated strings")
    keys = tuple(k.strip() for k in items if k.strip())
    if not keys and len(items) > 1:
        # "," or ["", ""]: meant to sign, but would silently leave URLs unsigned.
        raise SettingsError(
            "signing_keys", HIDDEN, "holds only empty keys; unset it to turn signing off"
        )
    if any(len(k) < MIN_SECRET_CHARS for k in keys):
        raise SettingsError(
            "signing_keys", HIDDEN, f"each key must be at least {MIN_SECRET_CHARS} characters"
        )
    return keys


def key_encryption_key(value: object) -> str:
    """64 hex digits."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value.strip()):
        raise SettingsError("key_encryption_key", HIDDEN, "expected 64 hex digits")
    return value.strip()


def admin_token(value: object) -> str:
    """At least :data:`MIN_SECRET_CHARS` characters."""
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_CHARS:
        raise SettingsError(
            "admin_token", HIDDEN, f"must be at least {MIN_SECRET_CHARS} characters"
        )
    return value.strip()


# The secret settings' coercions, by setting name.
SECRET_VALUES: Final[dict[str, Callable[[object], object]]] = {
    "signing_keys": signing_keys,
    "key_encryption_key": key_encryption_key,
    "admin_token": admin_token,
}
