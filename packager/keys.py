"""The packager's side of encryption: which renditions get which content key, keys made
and stored, and the checks ``cadenza package --encryption`` makes before any track.

- Keys come from the OS CSPRNG (:func:`secrets.token_bytes`), one per track by default,
  or one per codec or per rendition (``--key-per``); ``--key-id``/``--key`` give one
  fixed key for interoperability tests.
- Each key goes, wrapped with the key-encryption key, to the key store
  (:mod:`cadenza.store.keys`) before the track is committed, so no published track
  lacks its key; the key is never written under the output root nor into
  ``presentation.json`` (which records the key id only).
- The ``cbcs`` constant IV (in ``tenc``; not secret) is drawn once per key, so the
  renditions that share a key share byte-identical protection boxes and a switching
  group keeps one init segment.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import fnmatch
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cadenza.manifests.model import EncryptionScheme, SegmentLayout
from cadenza.packager.encrypt import RenditionKey
from cadenza.packager.errors import PackagerError
from cadenza.packager.segmenter import RungPlan
from cadenza.store.errors import StoreError
from cadenza.store.keys import (
    KeyStore,
    KeyStoreError,
    check_key_id,
    is_inside,
    key_store_location,
    open_key_store,
    require_kek,
)
from cadenza.store.s3client import S3Settings

KEY_BYTES = 16


class KeyUnit(enum.StrEnum):
    """What one content key covers (``--key-per``)."""

    TRACK = "track"
    CODEC = "codec"
    RENDITION = "rendition"


class EncryptionError(PackagerError):
    """Encryption asked for but impossible: a bad key, a missing KEK, a key store that
    cannot be used.  ``reason`` is what to fix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class EncryptionOptions:
    """``--encryption`` and its companions; travels to each track's process."""

    scheme: EncryptionScheme
    key_store: str  # a folder or s3:// prefix (store.keys.open_key_store)
    key_per: KeyUnit = KeyUnit.TRACK
    key_id: str | None = None  # 32 hex, with ``key``
    key: str | None = None
    renditions: str = "*"  # glob over rendition ids: the ones encrypted
    s3: S3Settings | None = None
    iv: str | None = None  # aes-128: an explicit IV (32 hex); None: the media sequence number
    # The key-encryption key, read once by the command: a worker process may have been
    # forked (forkserver) before the environment named it. None: read it from the
    # environment where the keys are stored (a Dask worker's own; never sent over Dask).
    kek: bytes | None = field(default=None, repr=False, compare=False)

    def fingerprint_options(self) -> tuple[tuple[str, str], ...]:
        """What of this shapes the output (the key store and key do not)."""
        return (
            ("encryption", self.scheme.value),
            ("key_per", self.key_per.value),
            ("key_id", self.key_id or ""),
            ("encrypt_renditions", self.renditions),
            ("iv", self.iv or ""),
        )


def parse_hex16(text: str, what: str) -> bytes:
    """A key or key id given as 32 hex digits."""
    value = text.strip().lower()
    if value.startswith("0x"):
        value = value[2:]
    if len(value) != 2 * KEY_BYTES or any(c not in "0123456789abcdef" for c in value):
        raise EncryptionError(
            f"{what} must be 32 hex digits (16 bytes), got {len(value)} characters"
        )
    return bytes.fromhex(value)


def make_options(
    scheme: str,
    *,
    out: str,
    env: Mapping[str, str],
    key_per: str = KeyUnit.TRACK.value,
    key_id: str | None = None,
    key: str | None = None,
    renditions: str = "*",
    single_file: bool = False,
    iv: str | None = None,
    s3: S3Settings | None = None,
) -> EncryptionOptions:
    """Check everything that can be checked before packaging (raises
    :class:`EncryptionError` with what to do): the scheme, the key's form, the KEK, the
    key store's place (never under ``out``), and a given key id against the store."""
    try:
        chosen = EncryptionScheme(scheme)
    except ValueError:
        known = ", ".join(s.value for s in EncryptionScheme)
        raise EncryptionError(f"unknown encryption scheme {scheme!r} (known: {known})") from None
    try:
        unit = KeyUnit(key_per)
    except ValueError:
        known = ", ".join(u.value for u in KeyUnit)
        raise EncryptionError(f"unknown --key-per {key_per!r} (known: {known})") from None
    if (key_id is None) != (key is None):
        raise EncryptionError("--key-id and --key go together")
    if key_id is not None and key is not None:
        key_id = parse_hex16(key_id, "--key-id").hex()
        key = parse_hex16(key, "--key").hex()
    if iv is not None:
        if chosen is not EncryptionScheme.AES_128:
            raise EncryptionError("--iv is for --encryption aes-128 (cbcs uses a constant IV)")
        iv = parse_hex16(iv, "--iv").hex()
    if chosen is EncryptionScheme.AES_128 and single_file:
        raise EncryptionError(
            "--encryption aes-128 encrypts whole segment files; "
            "it cannot be used with --single-file"
        )
    try:
        kek = require_kek(env)
        location = key_store_location(env, out)
    except (KeyStoreError, ValueError) as exc:
        raise EncryptionError(str(exc)) from None
    if is_inside(location, out):
        raise EncryptionError(
            f"the key store {location} is inside the output root {out}: keys would be served; "
            "set CADENZA_KEY_STORE to a place outside it"
        )
    options = EncryptionOptions(chosen, location, unit, key_id, key, renditions, s3, iv, kek=kek)
    if key_id is not None and key is not None:
        stored = _run_with_store(options, kek, lambda store: store.get(key_id))
        if stored is not None and stored != bytes.fromhex(key):
            raise EncryptionError(
                f"key id {key_id} is already stored with a different key; "
                "give another --key-id, or the key stored under it"
            )
    return options


def _run_with_store(
    options: EncryptionOptions,
    kek: bytes,
    action: Callable[[KeyStore], Awaitable[bytes | None]],
) -> bytes | None:
    async def run() -> bytes | None:
        store: KeyStore = open_key_store(options.key_store, kek, options.s3)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise EncryptionError(f"key store {options.key_store}: {exc}") from None


def _unit_of(plan: RungPlan, unit: KeyUnit) -> str:
    if unit is KeyUnit.RENDITION:
        return plan.rendition_id
    if unit is KeyUnit.CODEC:
        return plan.codec.value
    return ""


def assign_keys(
    plans: Sequence[RungPlan], options: EncryptionOptions
) -> tuple[list[RungPlan], dict[str, bytes]]:
    """``plans`` with each chosen rendition's key, and the keys to store (by key id).
    Renditions whose id does not match ``options.renditions`` stay clear."""
    fixed_id = bytes.fromhex(options.key_id) if options.key_id else None
    fixed_key = bytes.fromhex(options.key) if options.key else None
    explicit_iv = bytes.fromhex(options.iv) if options.iv else None
    by_unit: dict[str, RenditionKey] = {}
    out = []
    for plan in plans:
        if not fnmatch.fnmatchcase(plan.rendition_id, options.renditions):
            out.append(plan)
            continue
        if options.scheme is EncryptionScheme.AES_128 and plan.layout is SegmentLayout.SINGLE:
            raise EncryptionError("aes-128 cannot encrypt the single-file layout")
        unit = _unit_of(plan, options.key_per)
        if unit not in by_unit:
            by_unit[unit] = RenditionKey(
                scheme=options.scheme,
                key_id=fixed_id or secrets.token_bytes(KEY_BYTES),
                key=fixed_key or secrets.token_bytes(KEY_BYTES),
                iv=secrets.token_bytes(KEY_BYTES)
                if options.scheme is EncryptionScheme.CBCS
                else explicit_iv,
            )
        out.append(replace(plan, key=by_unit[unit]))
    keys = {k.key_id.hex(): k.key for k in by_unit.values()}
    return out, keys


def store_keys(options: EncryptionOptions, keys: Mapping[str, bytes]) -> None:
    """Put every key in the key store (a conflicting key id fails the track)."""
    if not keys:
        return
    try:
        kek = options.kek if options.kek is not None else require_kek(os.environ)
    except KeyStoreError as exc:
        raise EncryptionError(str(exc)) from None

    async def put_all(store: KeyStore) -> None:
        for key_id, key in keys.items():
            await store.put(check_key_id(key_id), key)

    _run_with_store(options, kek, put_all)


def add_encryption_arguments(parser: argparse.ArgumentParser) -> None:
    """``--encryption`` and its companions for ``cadenza package``."""
    parser.add_argument(
        "--encryption",
        metavar="SCHEME",
        help="encrypt: cbcs (CENC, HLS SAMPLE-AES and DASH) or aes-128 (HLS only, whole "
        "segments); needs CADENZA_KEY_ENCRYPTION_KEY (see docs/packaging.md)",
    )
    parser.add_argument(
        "--key-per",
        default=KeyUnit.TRACK.value,
        metavar="UNIT",
        help="one content key per track (default), codec or rendition",
    )
    parser.add_argument("--key-id", metavar="HEX", help="a fixed key id (32 hex), with --key")
    parser.add_argument("--key", metavar="HEX", help="a fixed content key (32 hex), with --key-id")
    parser.add_argument(
        "--iv",
        metavar="HEX",
        help="aes-128: one explicit IV (32 hex) for every segment and the init segment, "
        "written in EXT-X-KEY (default: each segment's media sequence number)",
    )
    parser.add_argument(
        "--encrypt-renditions",
        default="*",
        metavar="GLOB",
        help="encrypt only the renditions whose id matches (default: all), e.g. 'aac-*'",
    )


def encryption_options(
    args: argparse.Namespace, env: Mapping[str, str], s3: S3Settings
) -> EncryptionOptions | None:
    """The parsed flags checked (:func:`make_options`); None without ``--encryption``."""
    if args.encryption is None:
        if args.key_id is not None or args.key is not None or args.iv is not None:
            raise EncryptionError("--key-id, --key and --iv need --encryption")
        return None
    return make_options(
        args.encryption,
        out=str(args.out),
        env=env,
        key_per=args.key_per,
        key_id=args.key_id,
        key=args.key,
        renditions=args.encrypt_renditions,
        iv=args.iv,
        single_file=bool(args.single_file),
        s3=s3,
    )
