"""The boxes of CENC ``cbcs`` protection (ISO/IEC 23001-7) for the CMAF writer
(:mod:`cadenza.packager.mp4`).

Init segment:

- the sample entry becomes ``enca`` and gains a ``sinf`` (ISO/IEC 14496-12 8.12):
  ``frma`` (the original format: ``mp4a``, ``Opus`` or ``fLaC``), ``schm`` (scheme
  ``cbcs``, version 0x00010000), ``schi`` { ``tenc`` } (23001-7 8.2);
- ``tenc`` version 1: ``default_isProtected`` 1, ``default_Per_Sample_IV_Size`` 0,
  the ``default_KID``, and a 16-byte ``default_constant_IV``; the pattern fields are 0
  (audio: every whole block encrypted, 23001-7 10.4.2 and 9.6);
- a ``pssh`` (23001-7 8.1) version 1 for the W3C ClearKey system listing the KIDs.

Media segments: ``senc`` (23001-7 7.2) with one empty entry per sample (no per-sample
IV with a constant IV, no subsamples for audio), and the ``saiz``/``saio`` pair that
points at those entries (14496-12 8.7.8, 8.7.9), which some readers expect beside
``senc``; every entry is 0 bytes, so they describe nothing beyond the sample count.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

CLEARKEY_SYSTEM_ID: Final = bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b")
SCHEME_CBCS: Final = b"cbcs"
SCHEME_VERSION: Final = 0x00010000


@dataclass(frozen=True, slots=True)
class Protection:
    """What an encrypted track's init segment declares: its KID and constant IV."""

    key_id: bytes  # 16 bytes
    constant_iv: bytes  # 16 bytes


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def tenc(protection: Protection) -> bytes:
    """TrackEncryptionBox version 1 (23001-7 8.2.2) for a constant IV and no pattern."""
    return _full_box(
        b"tenc",
        1,
        0,
        bytes([0, 0]),  # reserved; default_crypt_byte_block 0 / default_skip_byte_block 0
        bytes([1, 0]),  # default_isProtected, default_Per_Sample_IV_Size
        protection.key_id,
        bytes([len(protection.constant_iv)]),
        protection.constant_iv,
    )


def sinf(original_format: bytes, protection: Protection) -> bytes:
    """ProtectionSchemeInfoBox for ``cbcs`` (14496-12 8.12.1)."""
    frma = _box(b"frma", original_format)
    schm = _full_box(b"schm", 0, 0, SCHEME_CBCS, struct.pack(">I", SCHEME_VERSION))
    return _box(b"sinf", frma, schm, _box(b"schi", tenc(protection)))


def pssh_clearkey(key_ids: Sequence[bytes]) -> bytes:
    """A version 1 ``pssh`` for W3C ClearKey listing ``key_ids``, with no data."""
    return _full_box(
        b"pssh",
        1,
        0,
        CLEARKEY_SYSTEM_ID,
        struct.pack(">I", len(key_ids)),
        *key_ids,
        struct.pack(">I", 0),
    )


def sample_encryption_boxes(sample_count: int, entries_offset: int) -> bytes:
    """``saiz`` + ``saio`` + ``senc`` for ``sample_count`` fully encrypted samples with
    the constant IV; ``entries_offset`` is where ``senc``'s entries start, from the
    start of the ``moof`` (``tfhd`` default-base-is-moof)."""
    saiz = _full_box(b"saiz", 0, 0, struct.pack(">BI", 0, sample_count), bytes(sample_count))
    saio = _full_box(b"saio", 0, 0, struct.pack(">II", 1, entries_offset))
    senc = _full_box(b"senc", 0, 0, struct.pack(">I", sample_count))
    return saiz + saio + senc
