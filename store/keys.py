"""The key store: content keys, wrapped with a key-encryption key (KEK), kept apart from
the served media.

Content keys (16 bytes, AES-128) are never stored in the clear: each is wrapped with the
KEK by the AES key wrap of RFC 3394 (``cryptography``'s ``aes_key_wrap``; a 256-bit KEK,
so AES-256 wraps the key) and kept as one object named ``<key_id>.key`` holding the 24
wrapped bytes.  Unwrapping checks RFC 3394's integrity value, so a wrong KEK or a
damaged object is detected, never silently turned into a wrong content key.

The KEK comes from ``CADENZA_KEY_ENCRYPTION_KEY`` (64 hex digits) or from a file named
by ``CADENZA_KEY_ENCRYPTION_KEY_FILE`` (:func:`read_kek`); the packager and the origin
both read it.  Rotating it (:meth:`KeyStore.rewrap`) rewraps every stored key and
touches no media.

Where the store lives: a local folder or an ``s3://`` prefix (``CADENZA_KEY_STORE``);
by default the sibling of the output root named ``<root>-keys``
(:func:`default_key_store_location`), so a default packager and a default origin find
the same keys.  The S3 implementation is :mod:`cadenza.store.keys_s3`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from cadenza.store.atomic import oserror_reason, write_atomic
from cadenza.store.errors import LocalFileError, StoreError
from cadenza.store.s3client import S3Settings
from cadenza.store.s3url import is_s3_url, parse_s3_url

KEK_ENV: Final = "CADENZA_KEY_ENCRYPTION_KEY"
KEK_FILE_ENV: Final = "CADENZA_KEY_ENCRYPTION_KEY_FILE"
NEW_KEK_ENV: Final = "CADENZA_NEW_KEY_ENCRYPTION_KEY"
KEY_STORE_ENV: Final = "CADENZA_KEY_STORE"
KEK_BYTES: Final = 32
CONTENT_KEY_BYTES: Final = 16
KEY_SUFFIX: Final = ".key"
KEYS_SUFFIX: Final = "-keys"
_KEY_ID: Final = re.compile(r"^[0-9a-f]{32}$")
_HEX64: Final = re.compile(r"^[0-9a-fA-F]{64}$")
HOW_TO_SET_KEK: Final = (
    f"set {KEK_ENV} to 64 hex digits (a 256-bit key, e.g. from "
    "`python3 -c 'import secrets; print(secrets.token_hex(32))'`), "
    f"or {KEK_FILE_ENV} to the path of a file holding them; keep it out of the served folder"
)


class KeyStoreError(StoreError):
    """Base class of the key store's errors."""


class KekError(KeyStoreError, ValueError):
    """The key-encryption key is missing or malformed; ``reason`` says how to set it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BadKeyError(KeyStoreError, ValueError):
    """A key id or content key of the wrong form (``what`` names which)."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class KeyConflictError(KeyStoreError):
    """``key_id`` is already stored with a different content key."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"key id {key_id} is already stored with a different key; "
            "give another --key-id, or the key stored under it"
        )


class KeyUnwrapError(KeyStoreError):
    """A stored key does not unwrap with the KEK given: the wrong KEK, or a damaged
    object.  ``location`` names the object, never the key."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(
            f"{location}: does not unwrap with this key-encryption key "
            "(a different KEK was used to store it, or the object is damaged)"
        )


class KeyStoreLocationError(KeyStoreError, ValueError):
    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class KeyStore(Protocol):
    """Content keys by key id, wrapped with the KEK at rest."""

    async def get(self, key_id: str) -> bytes | None:
        """The unwrapped 16-byte content key, or None when no key has this id."""
        ...

    async def put(self, key_id: str, key: bytes) -> None:
        """Store ``key`` under ``key_id``; a no-op when the same key is there already,
        :class:`KeyConflictError` when a different one is."""
        ...

    async def rewrap(self, new_kek: bytes) -> int:
        """Rewrap every stored key with ``new_kek`` (which the store uses from then
        on); returns how many were rewrapped.  Safe to run again after an
        interruption: keys already wrapped with ``new_kek`` are left as they are."""
        ...

    async def close(self) -> None: ...


def check_key_id(key_id: str) -> str:
    if not _KEY_ID.match(key_id):
        raise BadKeyError("key id", f"{key_id!r} is not 32 lower-case hex digits")
    return key_id


def check_content_key(key: bytes) -> bytes:
    if len(key) != CONTENT_KEY_BYTES:
        raise BadKeyError("key", f"is {len(key)} bytes, not {CONTENT_KEY_BYTES}")
    return key


def check_kek(kek: bytes) -> bytes:
    if len(kek) != KEK_BYTES:
        raise KekError(
            f"the key-encryption key is {len(kek)} bytes, not {KEK_BYTES}; " + HOW_TO_SET_KEK
        )
    return kek


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 AES key wrap: 16 bytes in, 24 out."""
    return aes_key_wrap(kek, check_content_key(key))


def unwrap_key(kek: bytes, wrapped: bytes, location: str) -> bytes:
    try:
        key = aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise KeyUnwrapError(location) from None
    if len(key) != CONTENT_KEY_BYTES:
        raise KeyUnwrapError(location)
    return key


def rewrapped(old_kek: bytes, new_kek: bytes, wrapped: bytes, location: str) -> bytes | None:
    """``wrapped`` rewrapped with ``new_kek``, or None when it already is."""
    try:
        return wrap_key(new_kek, unwrap_key(old_kek, wrapped, location))
    except KeyUnwrapError:
        unwrap_key(new_kek, wrapped, location)  # raises unless already rewrapped
        return None


def parse_kek(text: str, source: str) -> bytes:
    text = text.strip()
    if not _HEX64.match(text):
        raise KekError(f"{source} is not 64 hex digits; " + HOW_TO_SET_KEK)
    return bytes.fromhex(text)


def read_kek(env: Mapping[str, str], name: str = KEK_ENV) -> bytes | None:
    """The KEK from ``env[name]`` (64 hex digits) or from the file ``env[name +
    "_FILE"]`` names; None when neither is set.  :class:`KekError` when malformed."""
    value = env.get(name, "")
    if value:
        return parse_kek(value, name)
    file_name = env.get(f"{name}_FILE", "")
    if not file_name:
        return None
    try:
        text = Path(file_name).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = oserror_reason(exc) if isinstance(exc, OSError) else "not text"
        raise KekError(f"{name}_FILE={file_name}: {reason}; " + HOW_TO_SET_KEK) from None
    return parse_kek(text, f"{name}_FILE={file_name}")


def require_kek(env: Mapping[str, str]) -> bytes:
    kek = read_kek(env)
    if kek is None:
        raise KekError("encryption needs a key-encryption key: " + HOW_TO_SET_KEK)
    return kek


def default_key_store_location(root: str) -> str:
    """``<root>-keys``: the folder beside a local root, or for ``s3://b/prefix`` the
    prefix ``s3://b/prefix-keys`` (a bucket's root has no sibling: give
    ``CADENZA_KEY_STORE``)."""
    if is_s3_url(root):
        url = parse_s3_url(root, prefix=True)
        if not url.key:
            raise KeyStoreLocationError(
                root, f"a bucket root has no '{KEYS_SUFFIX}' sibling; set {KEY_STORE_ENV}"
            )
        return f"{url}{KEYS_SUFFIX}"
    return os.path.abspath(root) + KEYS_SUFFIX


def key_store_location(env: Mapping[str, str], root: str) -> str:
    """``CADENZA_KEY_STORE`` when set, else :func:`default_key_store_location`."""
    return env.get(KEY_STORE_ENV) or default_key_store_location(root)


def is_inside(location: str, root: str) -> bool:
    """Whether the key store ``location`` is at or below the served ``root``."""
    if is_s3_url(location) != is_s3_url(root):
        return False
    if is_s3_url(root):
        loc, top = parse_s3_url(location, prefix=True), parse_s3_url(root, prefix=True)
        return loc.bucket == top.bucket and (
            not top.key or loc.key == top.key or loc.key.startswith(top.key + "/")
        )
    loc_path, top_path = Path(os.path.abspath(location)), Path(os.path.abspath(root))
    return loc_path == top_path or top_path in loc_path.parents


class LocalKeyStore:
    """Keys as files ``<folder>/<key_id>.key`` (mode 0600, folder 0700)."""

    def __init__(self, folder: Path, kek: bytes) -> None:
        self.folder = folder
        self._kek = check_kek(kek)

    def _path(self, key_id: str) -> Path:
        return self.folder / f"{check_key_id(key_id)}{KEY_SUFFIX}"

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalFileError(str(path), oserror_reason(exc)) from None

    async def get(self, key_id: str) -> bytes | None:
        path = self._path(key_id)
        wrapped = self._read(path)
        return None if wrapped is None else unwrap_key(self._kek, wrapped, str(path))

    async def put(self, key_id: str, key: bytes) -> None:
        path = self._path(key_id)
        wrapped = wrap_key(self._kek, key)
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(wrapped)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)  # create-if-absent: never replaces a stored key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        except OSError as exc:
            raise LocalFileError(str(path), oserror_reason(exc)) from None
        stored = await self.get(key_id)
        if stored != key:
            raise KeyConflictError(key_id)

    async def rewrap(self, new_kek: bytes) -> int:
        new_kek = check_kek(new_kek)
        count = 0
        paths = sorted(self.folder.glob(f"*{KEY_SUFFIX}")) if self.folder.is_dir() else []
        for path in paths:
            wrapped = self._read(path)
            if wrapped is None:
                continue
            fresh = rewrapped(self._kek, new_kek, wrapped, str(path))
            if fresh is not None:
                write_atomic(path, fresh)
                with contextlib.suppress(OSError):
                    path.chmod(0o600)
                count += 1
        self._kek = new_kek
        return count

    async def close(self) -> None:
        return None


def open_key_store(location: str, kek: bytes, s3_settings: S3Settings | None = None) -> KeyStore:
    """The key store at ``location`` (a folder or an ``s3://`` prefix)."""
    if is_s3_url(location):
        from cadenza.store.keys_s3 import S3KeyStore

        return S3KeyStore(parse_s3_url(location, prefix=True), kek, s3_settings or S3Settings())
    return LocalKeyStore(Path(location), kek)
