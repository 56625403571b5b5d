"""``--encryption``: CENC ``cbcs`` and HLS AES-128, checked by independent decoders.

FFmpeg's mov demuxer (through PyAV, ``decryption_key``) decrypts ``cbcs`` itself
(libavformat 62): every encrypted rendition must decode to exactly the PCM of the clear
rendition packaged from the same source (the coded bytes are the same, so lossy codecs
too), and to the same length; without the key it must not.  AES-128 segments are
decrypted here with ``cryptography`` (IV = media sequence number, RFC 8216 5.2) and
demuxed with PyAV.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import PRESETS
from cadenza.manifests.model import Codec, EncryptionScheme, Presentation
from cadenza.packager.keys import EncryptionOptions, KeyUnit
from cadenza.packager.mp4read import find_boxes
from cadenza.packager.track import PackageOptions, package_track
from tests.conftest import MakeInput
from tests.packager.verify import rendition_bytes

KEK_HEX = "ab" * 32
KEY_ID = "00112233445566778899aabbccddeeff"
KEY = "0f0e0d0c0b0a09080706050403020100"
CLEARKEY_SYSTEM_ID = bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b")


def _package(source: Path, out: Path, options: PackageOptions) -> tuple[Path, Presentation]:
    out.mkdir(parents=True, exist_ok=True)
    result = package_track(source, out, options)
    assert result.status == "packaged", result.error
    folder = out / result.track_id
    return folder, presentation_from_json((folder / "presentation.json").read_bytes())


def _decode(data: bytes, key: str | None = None) -> npt.NDArray[np.float32]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        options = {"decryption_key": key} if key else {}
        with av.open(handle.name, options=options) as container:
            frames = [f.to_ndarray().astype(np.float32) for f in container.decode(audio=0)]
    return np.concatenate(frames, axis=1)


def _options(scheme: EncryptionScheme, keys: Path, **kwargs: object) -> PackageOptions:
    encryption = EncryptionOptions(scheme, str(keys), **kwargs)  # type: ignore[arg-type]
    return PackageOptions(ladder=PRESETS["music"], encryption=encryption)


@pytest.fixture(scope="module")
def packaged(
    make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Presentation]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK_HEX)
    source = make_input("flac", 44100, 2, 6.5)
    root = tmp_path_factory.mktemp("enc")
    try:
        return {
            "clear": _package(source, root / "clear", PackageOptions(ladder=PRESETS["music"])),
            "cbcs": _package(
                source,
                root / "cbcs",
                _options(EncryptionScheme.CBCS, root / "keys", key_id=KEY_ID, key=KEY),
            ),
            "aes": _package(
                source,
                root / "aes",
                _options(EncryptionScheme.AES_128, root / "keys-aes", key_per=KeyUnit.RENDITION),
            ),
        }
    finally:
        mp.undo()


def test_every_codec_is_encrypted_with_cbcs(packaged: dict[str, tuple[Path, Presentation]]) -> None:
    _, presentation = packaged["cbcs"]
    assert {r.codec for r in presentation.renditions} == {Codec.AAC, Codec.OPUS, Codec.FLAC}
    for rendition in presentation.renditions:
        assert rendition.encryption is not None
        assert rendition.encryption.scheme is EncryptionScheme.CBCS
        assert rendition.encryption.key_id == KEY_ID


def test_ffmpeg_decrypts_cbcs_to_the_clear_pcm(
    packaged: dict[str, tuple[Path, Presentation]],
) -> None:
    clear_dir, clear = packaged["clear"]
    enc_dir, encrypted = packaged["cbcs"]
    for rendition in encrypted.renditions:
        plain = clear.rendition(rendition.id)
        clear_pcm = _decode(rendition_bytes(clear_dir / plain.id, plain))
        data = rendition_bytes(enc_dir / rendition.id, rendition)
        decrypted = _decode(data, KEY)
        assert decrypted.shape == clear_pcm.shape, rendition.id
        assert np.array_equal(decrypted, clear_pcm), rendition.id
        # Without the key, or with a wrong one, the payload is not the source.
        for wrong in (None, "00" * 16):
            try:
                garbled = _decode(data, wrong)
            except (av.error.FFmpegError, ValueError):
                continue  # undecodable: not the source either
            assert garbled.shape != clear_pcm.shape or not np.array_equal(garbled, clear_pcm)


def test_samples_are_encrypted_but_sizes_and_tails_kept(
    packaged: dict[str, tuple[Path, Presentation]],
) -> None:
    clear_dir, clear = packaged["clear"]
    enc_dir, encrypted = packaged["cbcs"]
    for rendition in encrypted.renditions:
        plain = clear.rendition(rendition.id)
        first_clear = (clear_dir / plain.id / plain.segment_name(plain.segments[0])).read_bytes()
        first_enc = (
            enc_dir / rendition.id / rendition.segment_name(rendition.segments[0])
        ).read_bytes()
        mdat_clear = find_boxes(first_clear, "mdat")[0].payload
        mdat_enc = find_boxes(first_enc, "mdat")[0].payload
        assert len(mdat_clear) == len(mdat_enc)
        assert mdat_clear != mdat_enc
        # The same timeline: gapless and aligned exactly as the clear rendition.
        assert [(s.start_ticks, s.duration_ticks) for s in rendition.segments] == [
            (s.start_ticks, s.duration_ticks) for s in plain.segments
        ]
        assert rendition.encoder_delay_ticks == plain.encoder_delay_ticks
        assert len(find_boxes(first_enc, "moof/traf/senc")) == 1
    assert encrypted.loudness == clear.loudness


def test_init_segment_declares_cbcs_and_clearkey(
    packaged: dict[str, tuple[Path, Presentation]],
) -> None:
    enc_dir, encrypted = packaged["cbcs"]
    originals = {Codec.AAC: b"mp4a", Codec.OPUS: b"Opus", Codec.FLAC: b"fLaC"}
    for rendition in encrypted.renditions:
        init = (enc_dir / rendition.id / rendition.init_name).read_bytes()
        stsd = find_boxes(init, "moov/trak/mdia/minf/stbl/stsd")[0].payload
        assert stsd[12:16] == b"enca"
        for kind, expected in (
            (b"frma", originals[rendition.codec]),
            (b"schm", b"\x00\x00\x00\x00cbcs\x00\x01\x00\x00"),
        ):
            at = stsd.index(kind)
            size = struct.unpack(">I", stsd[at - 4 : at])[0]
            assert stsd[at + 4 : at - 4 + size] == expected
        at = stsd.index(b"tenc")
        tenc = stsd[at + 4 : at + 4 + 4 + 2 + 2 + 16 + 1 + 16]
        assert tenc[0] == 1  # version 1
        assert tenc[4:8] == b"\x00\x00\x01\x00"  # no pattern, protected, no per-sample IV
        assert tenc[8:24].hex() == KEY_ID
        assert tenc[24] == 16
        pssh = find_boxes(init, "moov/pssh")[0].payload
        assert pssh[0] == 1 and pssh[4:20] == CLEARKEY_SYSTEM_ID
        assert pssh[20:24] == b"\x00\x00\x00\x01" and pssh[24:40].hex() == KEY_ID


def _aes_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()


def test_aes128_segments_decrypt_with_sequence_number_ivs(
    packaged: dict[str, tuple[Path, Presentation]], tmp_path: Path
) -> None:
    clear_dir, clear = packaged["clear"]
    enc_dir, encrypted = packaged["aes"]
    key_ids = set()
    for rendition in encrypted.renditions:
        assert rendition.encryption is not None
        assert rendition.encryption.scheme is EncryptionScheme.AES_128
        key_ids.add(rendition.encryption.key_id)
        wrapped = enc_dir.parent.parent / "keys-aes" / f"{rendition.encryption.key_id}.key"
        key = aes_key_unwrap(bytes.fromhex(KEK_HEX), wrapped.read_bytes())
        folder = enc_dir / rendition.id
        init_file = (folder / rendition.init_name).read_bytes()
        # The init segment stays clear (the playlist maps it before its EXT-X-KEY, so
        # RFC 8216 4.3.2.5's IV rule for encrypted init segments never applies).
        assert init_file[4:8] == b"ftyp"
        playlist = (folder / rendition.playlist_name).read_text()
        assert playlist.index("#EXT-X-MAP:") < playlist.index("#EXT-X-KEY:METHOD=AES-128")
        parts = [init_file]
        for segment in rendition.segments:
            data = (folder / rendition.segment_name(segment)).read_bytes()
            assert len(data) == segment.size_bytes and len(data) % 16 == 0
            parts.append(_aes_decrypt(key, segment.number.to_bytes(16, "big"), data))
        plain = clear.rendition(rendition.id)
        expected = _decode(rendition_bytes(clear_dir / plain.id, plain))
        assert np.array_equal(_decode(b"".join(parts)), expected), rendition.id
    assert len(key_ids) == len(encrypted.renditions)  # --key-per rendition


def test_keys_stay_out_of_the_served_tree(
    packaged: dict[str, tuple[Path, Presentation]],
) -> None:
    enc_dir, _ = packaged["cbcs"]
    key = bytes.fromhex(KEY)
    for path in enc_dir.rglob("*"):
        if path.is_file():
            assert key not in path.read_bytes(), path
            assert KEY not in path.read_text(errors="replace"), path
    doc = json.loads((enc_dir / "presentation.json").read_text())
    assert all(r["encryption"] == {"scheme": "cbcs", "key_id": KEY_ID} for r in doc["renditions"])


def test_only_the_chosen_renditions_are_encrypted(
    make_input: MakeInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK_HEX)
    source = make_input("flac", 44100, 2, 2.0)
    _, presentation = _package(
        source,
        tmp_path / "out",
        _options(EncryptionScheme.AES_128, tmp_path / "keys", renditions="aac-*"),
    )
    for rendition in presentation.renditions:
        assert (rendition.encryption is not None) == rendition.id.startswith("aac-")
    key_ids = {r.encryption.key_id for r in presentation.renditions if r.encryption}
    assert len(key_ids) == 1  # one key per track by default


def test_a_switching_group_keeps_one_init_segment(
    packaged: dict[str, tuple[Path, Presentation]],
) -> None:
    """One key per track: the protection boxes of a group's rungs are the same, so the
    packager still makes their init segments byte-identical."""
    enc_dir, encrypted = packaged["cbcs"]
    aac = next(g for g in encrypted.groups if g.switchable)
    inits = {
        (enc_dir / rid / encrypted.rendition(rid).init_name).read_bytes()
        for rid in aac.rendition_ids
    }
    assert len(inits) == 1


def test_cbcs_in_the_single_file_layout_decrypts(
    make_input: MakeInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK_HEX)
    source = make_input("flac", 48000, 2, 3.0)
    ladder = PRESETS["music"]
    clear_dir, clear = _package(
        source, tmp_path / "clear", PackageOptions(ladder, single_file=True)
    )
    encryption = EncryptionOptions(
        EncryptionScheme.CBCS, str(tmp_path / "keys"), key_id=KEY_ID, key=KEY
    )
    enc_dir, encrypted = _package(
        source, tmp_path / "enc", PackageOptions(ladder, single_file=True, encryption=encryption)
    )
    for rendition in encrypted.renditions:
        plain = clear.rendition(rendition.id)
        expected = _decode(rendition_bytes(clear_dir / plain.id, plain))
        data = rendition_bytes(enc_dir / rendition.id, rendition)
        assert np.array_equal(_decode(data, KEY), expected), rendition.id
        # The byte ranges (from the sidx's sizes) still land on each fragment's moof.
        for segment in rendition.segments:
            assert segment.byte_range is not None
            at = segment.byte_range.offset_bytes
            assert data[at + 4 : at + 8] == b"moof"


def test_an_explicit_aes128_iv_covers_every_segment(
    make_input: MakeInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK_HEX)
    source = make_input("flac", 44100, 2, 2.0)
    iv = "000102030405060708090a0b0c0d0e0f"
    clear_dir, clear = _package(source, tmp_path / "clear", PackageOptions(PRESETS["music"]))
    enc_dir, encrypted = _package(
        source,
        tmp_path / "enc",
        _options(EncryptionScheme.AES_128, tmp_path / "keys", key_id=KEY_ID, key=KEY, iv=iv),
    )
    for rendition in encrypted.renditions:
        assert rendition.encryption is not None and rendition.encryption.iv == iv
        folder = enc_dir / rendition.id
        files = [rendition.segment_name(s) for s in rendition.segments]
        data = (folder / rendition.init_name).read_bytes() + b"".join(  # the init is clear
            _aes_decrypt(bytes.fromhex(KEY), bytes.fromhex(iv), (folder / name).read_bytes())
            for name in files
        )
        plain = clear.rendition(rendition.id)
        expected = _decode(rendition_bytes(clear_dir / plain.id, plain))
        assert np.array_equal(_decode(data), expected), rendition.id
