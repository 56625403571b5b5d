"""``cadenza package --encryption`` bad input (usage errors, exit 2, before any track),
a changed encryption repackages, and ``cadenza keys rewrap`` rotates the KEK."""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.store.keys import open_key_store
from cadenza.store.s3client import S3Settings
from tests.conftest import MakeInput, Moto
from tests.packager.conftest import list_keys

KEK = "cd" * 32
NEW_KEK = "ef" * 32
KEY_ID = "00112233445566778899aabbccddeeff"


def _package(source: Path, out: Path | str, *extra: str) -> int:
    return main(["package", str(source), "--out", str(out), "--ladder", "lossy", "-q", *extra])


@pytest.fixture
def kek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK)
    monkeypatch.delenv("CADENZA_KEY_STORE", raising=False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--encryption", "cenc"], "unknown encryption scheme 'cenc'"),
        (["--encryption", "cbcs", "--key-id", "0011", "--key", "00" * 16], "--key-id must be 32"),
        (["--encryption", "cbcs", "--key-id", KEY_ID, "--key", "00" * 15], "--key must be 32"),
        (["--encryption", "cbcs", "--key-id", KEY_ID], "--key-id and --key go together"),
        (["--encryption", "cbcs", "--key-per", "album"], "unknown --key-per 'album'"),
        (["--encryption", "aes-128", "--single-file"], "cannot be used with --single-file"),
        (["--key-id", KEY_ID, "--key", "00" * 16], "need --encryption"),
        (["--encryption", "cbcs", "--iv", "00" * 16], "--iv is for --encryption aes-128"),
        (["--encryption", "aes-128", "--iv", "00" * 8], "--iv must be 32 hex digits"),
    ],
)
def test_bad_encryption_flags_are_usage_errors(
    kek: None,
    make_input: MakeInput,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    assert _package(make_input(), tmp_path / "out", *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out-keys").exists()


def test_a_missing_kek_says_how_to_set_it(
    make_input: MakeInput,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CADENZA_KEY_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("CADENZA_KEY_ENCRYPTION_KEY_FILE", raising=False)
    assert _package(make_input(), tmp_path / "out", "--encryption", "cbcs") == 2
    err = capsys.readouterr().err
    assert "set CADENZA_KEY_ENCRYPTION_KEY to 64 hex digits" in err
    assert "CADENZA_KEY_ENCRYPTION_KEY_FILE" in err


def test_a_key_store_inside_the_output_is_refused(
    kek: None,
    make_input: MakeInput,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CADENZA_KEY_STORE", str(tmp_path / "out" / "keys"))
    assert _package(make_input(), tmp_path / "out", "--encryption", "cbcs") == 2
    assert "inside the output root" in capsys.readouterr().err


def test_a_key_id_stored_with_another_key_is_refused(
    kek: None, make_input: MakeInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_input("flac", 44100, 2, 1.0)
    out = tmp_path / "out"
    fixed = ["--encryption", "cbcs", "--key-id", KEY_ID, "--key", "11" * 16]
    assert _package(source, out, *fixed) == 0
    assert (tmp_path / "out-keys" / f"{KEY_ID}.key").is_file()
    other = ["--encryption", "cbcs", "--key-id", KEY_ID, "--key", "22" * 16, "--force"]
    assert _package(source, out, *other) == 2
    assert f"key id {KEY_ID} is already stored with a different key" in capsys.readouterr().err
    # The same key again is fine (a rerun of the same command).
    assert _package(source, out, *fixed, "--force") == 0


def test_changing_the_encryption_repackages(
    kek: None, make_input: MakeInput, tmp_path: Path
) -> None:
    source = make_input("flac", 44100, 2, 1.0)
    out = tmp_path / "out"
    assert _package(source, out) == 0
    assert _package(source, out) == 0
    presentation_path = out / source.stem / "presentation.json"
    clear = presentation_from_json(presentation_path.read_bytes())
    assert all(r.encryption is None for r in clear.renditions)
    assert _package(source, out, "--encryption", "cbcs") == 0
    encrypted = presentation_from_json(presentation_path.read_bytes())
    assert all(r.encryption is not None for r in encrypted.renditions)
    assert encrypted.fingerprint is not None
    assert dict(encrypted.fingerprint.options)["encryption"] == "cbcs"


def test_keys_rewrap_rotates_the_kek(
    kek: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_dir = tmp_path / "keys"
    key = secrets.token_bytes(16)

    async def put() -> None:
        await open_key_store(str(store_dir), bytes.fromhex(KEK)).put(KEY_ID, key)

    asyncio.run(put())
    assert main(["keys", "rewrap", "--store", str(store_dir)]) == 2
    assert "CADENZA_NEW_KEY_ENCRYPTION_KEY" in capsys.readouterr().err
    monkeypatch.setenv("CADENZA_NEW_KEY_ENCRYPTION_KEY", NEW_KEK)
    assert main(["keys", "rewrap", "--store", str(store_dir)]) == 0
    assert "1 keys rewrapped" in capsys.readouterr().err

    async def get() -> bytes | None:
        return await open_key_store(str(store_dir), bytes.fromhex(NEW_KEK)).get(KEY_ID)

    assert asyncio.run(get()) == key


def test_s3_output_keeps_its_keys_beside_the_prefix(
    kek: None,
    make_input: MakeInput,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: Moto,
    s3_bucket: str,
) -> None:
    """``--out s3://b/lib``: the keys go to ``s3://b/lib-keys``, wrapped, never under
    the served prefix."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    source = make_input("flac", 44100, 2, 1.0, name="s3enc")
    out = f"s3://{s3_bucket}/lib"
    fixed = ["--encryption", "cbcs", "--key-id", KEY_ID, "--key", "33" * 16]
    assert _package(source, out, "--staging", str(tmp_path / "staging"), *fixed) == 0
    served = list_keys(moto_server.url, s3_bucket, "lib/")
    assert any(k.endswith("presentation.json") for k in served)
    assert not any(k.endswith(".key") for k in served)
    assert list_keys(moto_server.url, s3_bucket, "lib-keys/") == [f"lib-keys/{KEY_ID}.key"]

    async def get() -> bytes | None:
        settings = S3Settings(endpoint_url=moto_server.url)
        store = open_key_store(f"{out}-keys", bytes.fromhex(KEK), settings)
        try:
            return await store.get(KEY_ID)
        finally:
            await store.close()

    assert asyncio.run(get()) == bytes.fromhex("33" * 16)


def test_the_key_encryption_key_reaches_workers_forked_before_it_was_set(
    make_input: MakeInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process with threads packages through a forkserver, started once and never
    told of later environment changes: the command reads the key-encryption key and
    hands it to each track's process."""
    monkeypatch.delenv("CADENZA_KEY_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("CADENZA_KEY_STORE", raising=False)
    release = threading.Event()
    other = threading.Thread(target=release.wait)  # forking is unsafe: forkserver it is
    other.start()
    try:
        source = make_input("flac", 44100, 2, 1.0)
        assert _package(source, tmp_path / "clear") == 0  # the forkserver starts here
        monkeypatch.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK)
        out = tmp_path / "enc"
        assert _package(source, out, "--encryption", "cbcs") == 0
        presentation = presentation_from_json(
            (out / source.stem / "presentation.json").read_bytes()
        )
        assert all(r.encryption is not None for r in presentation.renditions)
    finally:
        release.set()
        other.join()
