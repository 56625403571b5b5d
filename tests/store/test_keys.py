"""The key store: content keys wrapped with the KEK (RFC 3394), local and on S3 (a real
moto server on loopback), a conflicting key refused, the KEK rotated without touching
the keys, and the KEK read from the environment with errors that say how to set it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from cadenza.store.keys import (
    BadKeyError,
    KekError,
    KeyConflictError,
    KeyStore,
    KeyStoreLocationError,
    KeyUnwrapError,
    default_key_store_location,
    is_inside,
    open_key_store,
    read_kek,
    require_kek,
)
from cadenza.store.s3client import S3Settings
from tests.conftest import Moto

BUCKET = "cadenza-keys"
KEK = bytes(range(32))
NEW_KEK = bytes(range(32, 64))
KID = "0123456789abcdef0123456789abcdef"
KID2 = "fedcba9876543210fedcba9876543210"


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    server = Moto()
    server.start()
    boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(
        Bucket=BUCKET
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
async def location(
    request: pytest.FixtureRequest, tmp_path: Path, moto: Moto
) -> AsyncIterator[tuple[str, S3Settings]]:
    settings = S3Settings(
        endpoint_url=moto.url, max_attempts=2, connect_timeout_s=2, read_timeout_s=2
    )
    if request.param == "local":
        yield str(tmp_path / "out-keys"), settings
    else:
        yield f"s3://{BUCKET}/{tmp_path.name}-keys", settings


async def _open(loc: tuple[str, S3Settings], kek: bytes = KEK) -> KeyStore:
    return open_key_store(loc[0], kek, s3_settings=loc[1])


async def test_a_key_comes_back_as_it_went_in(location: tuple[str, S3Settings]) -> None:
    store = await _open(location)
    key = secrets.token_bytes(16)
    assert await store.get(KID) is None
    await store.put(KID, key)
    assert await store.get(KID) == key
    await store.put(KID, key)  # the same key again: a no-op
    await store.close()
    reopened = await _open(location)
    assert await reopened.get(KID) == key
    await reopened.close()


async def test_a_different_key_under_a_stored_id_is_refused(
    location: tuple[str, S3Settings],
) -> None:
    store = await _open(location)
    key = secrets.token_bytes(16)
    await store.put(KID, key)
    with pytest.raises(KeyConflictError) as caught:
        await store.put(KID, secrets.token_bytes(16))
    assert caught.value.key_id == KID
    assert await store.get(KID) == key
    await store.close()


async def test_rewrap_rotates_the_kek_and_keeps_the_keys(location: tuple[str, S3Settings]) -> None:
    store = await _open(location)
    keys = {KID: secrets.token_bytes(16), KID2: secrets.token_bytes(16)}
    for kid, key in keys.items():
        await store.put(kid, key)
    assert await store.rewrap(NEW_KEK) == 2
    await store.close()
    with_new = await _open(location, NEW_KEK)
    for kid, key in keys.items():
        assert await with_new.get(kid) == key
    await with_new.close()
    with_old = await _open(location, KEK)
    with pytest.raises(KeyUnwrapError):
        await with_old.get(KID)
    # A second run (after an interruption, say) finds nothing left to rewrap.
    assert await with_old.rewrap(NEW_KEK) == 0
    await with_old.close()


async def test_a_wrong_kek_is_detected(location: tuple[str, S3Settings]) -> None:
    store = await _open(location)
    await store.put(KID, secrets.token_bytes(16))
    await store.close()
    other = await _open(location, secrets.token_bytes(32))
    with pytest.raises(KeyUnwrapError) as caught:
        await other.get(KID)
    assert "unwrap" in str(caught.value)
    with pytest.raises(KeyUnwrapError):
        await other.rewrap(NEW_KEK)
    await other.close()


async def test_keys_are_stored_wrapped_never_in_the_clear(tmp_path: Path) -> None:
    store = open_key_store(str(tmp_path / "k"), KEK)
    key = secrets.token_bytes(16)
    await store.put(KID, key)
    stored = (tmp_path / "k" / f"{KID}.key").read_bytes()
    assert key not in stored and len(stored) == 24
    assert aes_key_unwrap(KEK, stored) == key
    assert (tmp_path / "k" / f"{KID}.key").stat().st_mode & 0o077 == 0


async def test_bad_ids_and_key_lengths_are_refused(tmp_path: Path) -> None:
    store = open_key_store(str(tmp_path / "k"), KEK)
    with pytest.raises(BadKeyError):
        await store.put("0123", secrets.token_bytes(16))
    with pytest.raises(BadKeyError):
        await store.put(KID.upper(), secrets.token_bytes(16))
    with pytest.raises(BadKeyError):
        await store.put(KID, secrets.token_bytes(15))
    with pytest.raises(BadKeyError):
        await store.get("../../etc/passwd")
    with pytest.raises(KekError):
        open_key_store(str(tmp_path / "k"), b"short")


def test_the_kek_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert read_kek({}) is None
    assert read_kek({"CADENZA_KEY_ENCRYPTION_KEY": KEK.hex()}) == KEK
    kek_file = tmp_path / "kek"
    kek_file.write_text(KEK.hex().upper() + "\n")
    assert read_kek({"CADENZA_KEY_ENCRYPTION_KEY_FILE": str(kek_file)}) == KEK
    assert (
        read_kek(
            {"CADENZA_NEW_KEY_ENCRYPTION_KEY": NEW_KEK.hex()}, "CADENZA_NEW_KEY_ENCRYPTION_KEY"
        )
        == NEW_KEK
    )
    for env in (
        {"CADENZA_KEY_ENCRYPTION_KEY": "abc"},
        {"CADENZA_KEY_ENCRYPTION_KEY_FILE": str(tmp_path / "missing")},
    ):
        with pytest.raises(KekError) as caught:
            read_kek(env)
        assert "CADENZA_KEY_ENCRYPTION_KEY" in str(caught.value)
        assert "64 hex digits" in str(caught.value)
    with pytest.raises(KekError) as missing:
        require_kek({})
    assert "set CADENZA_KEY_ENCRYPTION_KEY" in str(missing.value)


def test_the_default_store_is_the_roots_keys_sibling(tmp_path: Path) -> None:
    assert default_key_store_location(str(tmp_path / "out")) == str(tmp_path / "out-keys")
    assert default_key_store_location(str(tmp_path / "out") + "/") == str(tmp_path / "out-keys")
    assert default_key_store_location("s3://b-1/lib/music/") == "s3://b-1/lib/music-keys"
    with pytest.raises(KeyStoreLocationError):
        default_key_store_location("s3://b-1")
    assert not is_inside(str(tmp_path / "out-keys"), str(tmp_path / "out"))
    assert is_inside(str(tmp_path / "out" / "keys"), str(tmp_path / "out"))
    assert is_inside("s3://b-1/lib/keys", "s3://b-1/lib")
    assert not is_inside("s3://b-1/lib-keys", "s3://b-1/lib")
