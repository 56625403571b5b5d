"""The sample and segment ciphers: CENC ``cbcs`` for audio samples and whole-segment
AES-128-CBC for HLS ``METHOD=AES-128``.  AES itself is ``cryptography``'s (OpenSSL);
nothing here implements a cipher.

- ``cbcs`` for audio (ISO/IEC 23001-7 10.4 and 9.6): no pattern; every whole 16-byte
  block of a sample is encrypted with AES-128-CBC, the chain restarting from the
  constant IV (``tenc`` ``default_constant_IV``) at each sample; a trailing partial
  block stays in the clear.  The sample keeps its size, so ``trun`` sizes and offsets
  are unchanged.
- AES-128 (RFC 8216 4.3.2.4 and 5.2): the whole segment file, PKCS7-padded, with
  AES-128-CBC; the IV is the media sequence number as a 128-bit big-endian integer
  unless the playlist gives an explicit one.  hls.js decrypts an init segment that an
  ``EXT-X-KEY`` without ``IV`` covers with the IV of sequence number 0, so the init
  segment gets IV 0 (or the explicit IV).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cadenza.manifests.model import Encryption, EncryptionScheme

BLOCK_BYTES: Final = 16


@dataclass(frozen=True, slots=True)
class RenditionKey:
    """How one rendition is encrypted: the scheme, the 16-byte key and its id, the
    ``cbcs`` constant IV (16 bytes, in ``tenc``; not secret) or the AES-128 explicit IV
    (None: from the media sequence number)."""

    scheme: EncryptionScheme
    key_id: bytes
    key: bytes
    iv: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.key_id) != BLOCK_BYTES or len(self.key) != BLOCK_BYTES:
            raise ValueError("a key and a key id are 16 bytes each")
        if self.iv is not None and len(self.iv) != BLOCK_BYTES:
            raise ValueError("an IV is 16 bytes")
        if self.scheme is EncryptionScheme.CBCS and self.iv is None:
            raise ValueError("cbcs needs its constant IV")

    @property
    def encryption(self) -> Encryption:
        """The model's record of it (no key: the key stays in the key store)."""
        explicit = self.iv.hex() if self.scheme is EncryptionScheme.AES_128 and self.iv else None
        return Encryption(self.scheme, self.key_id.hex(), explicit)


def encrypt_samples_cbcs(key: bytes, constant_iv: bytes, samples: Sequence[bytes]) -> list[bytes]:
    """Each sample with its whole blocks AES-128-CBC encrypted from ``constant_iv``
    and its trailing partial block clear (ISO/IEC 23001-7 10.4.2, audio: no pattern)."""
    algorithm = algorithms.AES(key)
    out = []
    for sample in samples:
        whole = len(sample) - len(sample) % BLOCK_BYTES
        if whole == 0:
            out.append(sample)
            continue
        encryptor = Cipher(algorithm, modes.CBC(constant_iv)).encryptor()
        out.append(encryptor.update(sample[:whole]) + encryptor.finalize() + sample[whole:])
    return out


def sequence_iv(sequence_number: int) -> bytes:
    """RFC 8216 5.2: the media sequence number as a 128-bit big-endian integer."""
    return sequence_number.to_bytes(BLOCK_BYTES, "big")


def encrypt_segment_aes128(key: bytes, iv: bytes, data: bytes) -> bytes:
    """RFC 8216 4.3.2.4 ``METHOD=AES-128``: PKCS7 padding, then AES-128-CBC."""
    padder = padding.PKCS7(BLOCK_BYTES * 8).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def segment_iv(rendition_key: RenditionKey, sequence_number: int) -> bytes:
    """The AES-128 IV of a media segment (the init segment is not encrypted)."""
    return rendition_key.iv or sequence_iv(sequence_number)
