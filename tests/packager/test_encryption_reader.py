"""The ``cbcs`` protection boxes read back by a reader the project did not write.

pymp4 (a construct-based ISO BMFF parser) parses the encrypted init segments whole,
``enca`` sample entry, ``sinf``/``frma``/``schm``/``schi``/``tenc`` and ``pssh``
included, and each fragment's ``saiz``/``saio``.  pymp4's ``senc`` assumes 8-byte
per-sample IVs, which ISO/IEC 23001-7 7.2 makes depend on ``tenc`` (here 0 bytes, a
constant IV), so ``senc`` is read here by hand, and by FFmpeg, which decrypts only
with it (``test_encryption.py``).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pymp4.parser import Box

from cadenza.manifests.ladder import PRESETS
from cadenza.manifests.model import EncryptionScheme, Presentation
from cadenza.packager.keys import EncryptionOptions
from cadenza.packager.mp4read import iter_boxes
from cadenza.packager.track import PackageOptions
from tests.conftest import MakeInput
from tests.packager.test_encryption import KEK_HEX, KEY, KEY_ID, _package

CLEARKEY = UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")
ORIGINAL = {"aac": b"mp4a", "opus": b"Opus", "flac": b"fLaC"}


@pytest.fixture(scope="module")
def encrypted(
    make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Presentation]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CADENZA_KEY_ENCRYPTION_KEY", KEK_HEX)
    root = tmp_path_factory.mktemp("reader-enc")
    encryption = EncryptionOptions(
        EncryptionScheme.CBCS, str(root / "keys"), key_id=KEY_ID, key=KEY
    )
    try:
        return _package(
            make_input("flac", 44100, 2, 9.0),
            root / "out",
            PackageOptions(ladder=PRESETS["music"], encryption=encryption),
        )
    finally:
        mp.undo()


def _walk(box: Any) -> Iterator[Any]:
    yield box
    for child in box.get("children") or box.get("sample_info") or []:
        yield from _walk(child)
    for entry in box.get("entries") or []:
        yield from _walk(entry)


def test_pymp4_reads_the_protected_init_segments(encrypted: tuple[Path, Presentation]) -> None:
    folder, presentation = encrypted
    for rendition in presentation.renditions:
        data = (folder / rendition.id / rendition.init_name).read_bytes()
        stream = io.BytesIO(data)
        boxes = []
        while stream.tell() < len(data):
            boxes.append(Box.parse_stream(stream))
        assert stream.tell() == len(data)
        found: dict[bytes, list[Any]] = {}
        for top in boxes:
            for box in _walk(top):
                kind = box.get("type") or box.get("format")
                found.setdefault(kind, []).append(box)
        assert {b"enca", b"sinf", b"frma", b"schm", b"schi", b"tenc", b"pssh"} <= found.keys()
        (entry,) = found[b"enca"]
        assert entry.channels == rendition.channels
        (frma,) = found[b"frma"]
        assert frma.original_format == ORIGINAL[rendition.codec.value]
        (schm,) = found[b"schm"]
        assert (schm.scheme_type, schm.scheme_version) == (b"cbcs", 0x00010000)
        (tenc,) = found[b"tenc"]
        assert tenc.version == 1
        assert (tenc.default_byte_blocks.crypt, tenc.default_byte_blocks.skip) == (0, 0)
        assert (tenc.is_encrypted, tenc.iv_size) == (1, 0)
        assert tenc.key_ID == UUID(KEY_ID)
        assert len(tenc.constant_iv) == 16
        (pssh,) = found[b"pssh"]
        assert pssh.system_ID == CLEARKEY
        assert pssh.key_IDs == [UUID(KEY_ID)]
        assert pssh.init_data == b""


def test_each_fragment_carries_its_sample_encryption(
    encrypted: tuple[Path, Presentation],
) -> None:
    folder, presentation = encrypted
    for rendition in presentation.renditions:
        for segment in rendition.segments:
            data = (folder / rendition.id / rendition.segment_name(segment)).read_bytes()
            moof = next(b for b in iter_boxes(data) if b.type == "moof")
            moof_start = moof.offset
            traf = next(
                b
                for b in iter_boxes(data, moof.offset + 8, moof.offset + moof.size)
                if b.type == "traf"
            )
            children = {
                b.type: b for b in iter_boxes(data, traf.offset + 8, traf.offset + traf.size)
            }
            trun = Box.parse(
                data[children["trun"].offset : children["trun"].offset + children["trun"].size]
            )
            saiz = Box.parse(
                data[children["saiz"].offset : children["saiz"].offset + children["saiz"].size]
            )
            saio = Box.parse(
                data[children["saio"].offset : children["saio"].offset + children["saio"].size]
            )
            count = trun.sample_count
            assert saiz.default_sample_info_size == 0 and saiz.sample_count == count
            assert list(saiz.sample_info_sizes) == [0] * count
            senc = children["senc"]
            version_flags, senc_count = struct.unpack_from(">II", data, senc.offset + 8)
            assert version_flags == 0 and senc_count == count
            assert senc.size == 16  # no per-sample IVs, no subsamples
            # saio points at senc's (empty) entries, from the start of the moof.
            assert saio.offsets == [senc.offset + 16 - moof_start]
