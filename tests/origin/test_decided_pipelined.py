"""Decided segments (``?abr=origin``) pipelined on one connection: the fast
transport answers a load that never waits at once, on the caller's stack
(``origin/transport/eager.py``), and goes on with the next request; the answers
come in order and are the ones aiohttp gives, however many are queued."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.origin.rawhttp import ThreadedOrigin
from tests.origin.test_origin_decided import FAST, GROUP_SEGMENT, Clock, _metric, _threaded

# More than the interpreter's recursion limit: answers that nested would fail.
PIPELINED = 1500
_DATE = re.compile(rb"\r\nDate: [^\r]*")
_LOCATION = re.compile(rb"\r\nLocation: \.\./([^/\r]+)/seg-(\d+)[^\r]*")


@pytest.fixture
def origins(packaged_root: Path) -> Iterator[tuple[ThreadedOrigin, ThreadedOrigin]]:
    """The fast transport and aiohttp alone, on one clock that does not move."""
    clock = Clock()
    fast = _threaded(packaged_root, clock)
    plain = _threaded(packaged_root, clock, fast_path=False)
    try:
        yield fast, plain
    finally:
        fast.stop()
        plain.stop()


def _pipelined(sid: str) -> bytes:
    heads = [
        f"GET {GROUP_SEGMENT.format(n=index % 3 + 1)}?sid={sid}&{FAST} HTTP/1.1\r\nHost: x\r\n\r\n"
        for index in range(PIPELINED)
    ]
    heads.append("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return "".join(heads).encode("latin-1")


def _answers(port: int, data: bytes) -> bytes:
    """Everything sent back for ``data`` (which ends with a request to close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(262144):
            chunks.append(chunk)
    return _DATE.sub(b"", b"".join(chunks))


def test_pipelined_decided_segments_are_answered_in_order_as_aiohttp_answers_them(
    origins: tuple[ThreadedOrigin, ThreadedOrigin],
) -> None:
    fast, plain = origins
    data = _pipelined("pipelined")
    answered = _answers(fast.port, data)
    assert answered == _answers(plain.port, data)
    assert answered.count(b"HTTP/1.1 302 Found\r\n") == PIPELINED
    numbers = [int(number) for _, number in _LOCATION.findall(answered)]
    assert numbers == [index % 3 + 1 for index in range(PIPELINED)]
    # Every decided segment was the fast transport's: the connection went to
    # aiohttp only at the last request (its Connection field), and /metrics' own
    # connection at its path.
    handovers = _counts(_metric(fast, "cadenza_fast_path_handovers_total"))
    counted = {reason for reason, count in handovers.items() if count}
    assert counted == {'reason="header"', 'reason="path"'}
    assert sum(_counts(_metric(fast, "cadenza_abr_decisions_total")).values()) == PIPELINED


def _counts(lines: str) -> dict[str, float]:
    """``{labels: value}`` of exported samples (``name{labels} value`` lines)."""
    found = (re.fullmatch(r"[^{]*\{(.*)\} (\S+)", line) for line in lines.splitlines())
    return {match.group(1): float(match.group(2)) for match in found if match is not None}
