"""FLAC frame headers (https://www.rfc-editor.org/rfc/rfc9639 section 9.1): renumber
the frames of a stream encoded alone so they read as frames of a longer one.

FFmpeg's FLAC encoder writes a fixed-blocksize stream: every frame header carries
the frame's number (UTF-8-like coded, RFC 9639 9.1.5), protected by the header's
CRC-8 (9.1.8), and the whole frame by a CRC-16 (9.3).  A segment encoded alone
numbers its frames from zero; :func:`renumber_frame` gives a frame its number in
the whole stream, so the segment is byte-identical to the batch packager's.
"""

from __future__ import annotations

from typing import Final

from cadenza.packager.errors import Mp4Error


def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC8: Final = _crc8_table()  # polynomial x^8 + x^2 + x + 1 (RFC 9639 9.1.8)
_CRC16: Final = _crc16_table()  # polynomial x^16 + x^15 + x^2 + 1 (RFC 9639 9.3)
_SYNC_FIXED: Final = b"\xff\xf8"  # frame sync, fixed block size


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _coded_number(number: int) -> bytes:
    """The UTF-8-like coding of a frame number (RFC 9639 9.1.5), up to 36 bits."""
    if number < 0x80:
        return bytes([number])
    for length in range(2, 8):
        if number < 1 << (5 * length + 1):
            break
    else:
        raise Mp4Error("flac", f"frame number {number} does not fit its header")
    tail = [0x80 | ((number >> (6 * i)) & 0x3F) for i in reversed(range(length - 1))]
    lead = (0xFF << (8 - length)) & 0xFF | (number >> (6 * (length - 1)))
    return bytes([lead, *tail])


def _coded_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    length = 0
    while lead & (0x80 >> length):
        length += 1
    if not 2 <= length <= 7:
        raise Mp4Error("flac", f"malformed coded number (lead byte {lead:#04x})")
    return length


def renumber_frame(frame: bytes, number: int) -> bytes:
    """``frame`` (one fixed-blocksize FLAC frame) with frame number ``number``, and its
    header CRC-8 and frame CRC-16 computed anew."""
    if len(frame) < 6 or frame[:2] != _SYNC_FIXED:
        raise Mp4Error("flac", "not a fixed-blocksize FLAC frame")
    blocksize_code, rate_code = frame[2] >> 4, frame[2] & 0x0F
    old_len = _coded_length(frame[4])
    extra = {6: 1, 7: 2}.get(blocksize_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    rest_at = 4 + old_len + extra + 1  # after the header's CRC-8
    header = frame[:4] + _coded_number(number) + frame[4 + old_len : 4 + old_len + extra]
    header += bytes([crc8(header)])
    body = header + frame[rest_at:-2]
    return body + crc16(body).to_bytes(2, "big")
