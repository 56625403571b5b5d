"""Regressions of the fast transport (origin/transport/) and of the aiohttp
path behind it, each over raw sockets against a real server: the same
request gets the same answer on a server with the fast path and on one
without it, and the answers RFC 9110 and RFC 9112 require."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.origin.settings import Settings
from cadenza.origin.transport.fast import FastPathProtocol
from tests.origin.rawhttp import ThreadedOrigin
from tests.origin.test_fastpath import (
    MASTER,
    SEGMENT,
    Connection,
    _cmcd,
    _get,
    _session_report,
    _warm,
    on_fast_path,
)

_DATE = re.compile(rb"\r\nDate: [^\r]*")


@pytest.fixture(scope="module")
def fast(packaged_root: Path) -> Iterator[ThreadedOrigin]:
    origin = ThreadedOrigin(Settings(root=str(packaged_root))).start()
    try:
        yield origin
    finally:
        origin.stop()


@pytest.fixture(scope="module")
def plain(packaged_root: Path) -> Iterator[ThreadedOrigin]:
    origin = ThreadedOrigin(Settings(root=str(packaged_root), fast_path=False)).start()
    try:
        yield origin
    finally:
        origin.stop()


def _raw(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _until_closed(port: int, data: bytes) -> bytes:
    """Everything the server sends for ``data`` until it closes the connection
    (``data`` ends with a request that asks it to)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return _DATE.sub(b"", b"".join(chunks))


def _both(fast: ThreadedOrigin, plain: ThreadedOrigin, data: bytes) -> tuple[bytes, bytes]:
    for origin in (fast, plain):
        _warm(origin, SEGMENT)
        _warm(origin, MASTER)
    return _until_closed(fast.port, data), _until_closed(plain.port, data)


_CLOSE = _raw("GET /healthz HTTP/1.1", "Host: x", "Connection: close")


def test_an_upgrade_request_is_handed_over_after_the_answers_before_it(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """``curl --http2 http://...`` (RFC 9110 7.8): httptools raises on the
    upgrade; the answer already made for the request before it is sent, and
    aiohttp answers the upgrade request as it does without the fast path."""
    upgrade = _raw(
        f"GET {SEGMENT} HTTP/1.1",
        "Host: x",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    )
    answers = []
    for origin in (fast, plain):
        _warm(origin, SEGMENT)
        connection = Connection(origin.port)
        try:
            connection.send(_get(SEGMENT) + upgrade)
            answers.append([connection.answer(), connection.answer()])
        finally:
            connection.close()
    without_date = [
        [(status, [h for h in headers if h[0] != "Date"], body) for status, headers, body in pair]
        for pair in answers
    ]
    assert [status for status, _, _ in without_date[0]] == [200, 200]
    assert without_date[0] == without_date[1]


def test_one_connections_head_does_not_change_how_anothers_is_parsed(
    fast: ThreadedOrigin,
) -> None:
    """Each connection has its own parser: ``Proxy-Connection: close`` on one
    does not make the next head on another fail and leave the fast path."""
    _warm(fast, SEGMENT)
    other = Connection(fast.port)
    first = Connection(fast.port)
    try:
        first.send(_get(SEGMENT, "Proxy-Connection: close"))
        assert first.answer()[0] == 200
        for _ in range(2):
            other.send(_get(SEGMENT))
            assert other.answer()[0] == 200
        assert on_fast_path(fast, other)
    finally:
        first.close()
        other.close()


@pytest.mark.parametrize(
    "fields",
    [
        (),
        ("Host: a", "Host: b"),
        ("Host: a", "User-Agent: a", "User-Agent: b"),
    ],
    ids=["no-host", "two-hosts", "two-user-agents"],
)
def test_a_missing_or_repeated_single_field_is_400_on_both_paths(
    fast: ThreadedOrigin, plain: ThreadedOrigin, fields: tuple[str, ...]
) -> None:
    """RFC 9112 3.2: no Host, or more than one, is a 400; so is a repeated
    field aiohttp allows once."""
    data = _raw(f"GET {SEGMENT} HTTP/1.1", *fields) + _CLOSE
    fast_bytes, plain_bytes = _both(fast, plain, data)
    assert fast_bytes.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert fast_bytes == plain_bytes


@pytest.mark.parametrize(
    ("first", "second", "gzipped"),
    [
        ("identity", "gzip", True),
        ("gzip", "identity", True),
        ("gzip;q=0", "deflate", False),
        ("br", "*", True),
        ("deflate", "br", False),
    ],
)
def test_repeated_accept_encoding_fields_choose_the_same_coding_on_both_paths(
    fast: ThreadedOrigin, plain: ThreadedOrigin, first: str, second: str, gzipped: bool
) -> None:
    """Repeated fields are one comma-separated list (RFC 9110 5.3)."""
    data = _get(MASTER, f"Accept-Encoding: {first}", f"Accept-Encoding: {second}") + _CLOSE
    fast_bytes, plain_bytes = _both(fast, plain, data)
    assert fast_bytes == plain_bytes
    assert (b"Content-Encoding: gzip" in fast_bytes) is gzipped


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=0.5", True),
        ("x-gzip", True),
        ("*;q=0", False),
        ("identity, *;q=0.1", True),
        ("gzip;q=2", False),
    ],
)
def test_accept_encoding_weights_are_honoured_on_both_paths(
    fast: ThreadedOrigin, plain: ThreadedOrigin, accept: str, gzipped: bool
) -> None:
    """RFC 9110 12.5.3: a coding with weight 0 is not acceptable; a malformed
    weight makes its member ignored."""
    _warm(fast, MASTER)
    connection = Connection(fast.port)
    try:
        connection.send(_get(MASTER, f"Accept-Encoding: {accept}"))
        status, headers, _ = connection.answer()
        assert status == 200
        assert (dict(headers).get("Content-Encoding") == "gzip") is gzipped
        assert on_fast_path(fast, connection)
    finally:
        connection.close()
    fast_bytes, plain_bytes = _both(
        fast, plain, _get(MASTER, f"Accept-Encoding: {accept}") + _CLOSE
    )
    assert fast_bytes == plain_bytes


def test_a_fragment_in_the_target_is_stripped_on_both_paths(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """A ``#`` never reaches a session's CMCD or sid: such a request is handed
    over, and aiohttp drops the fragment (RFC 9112 3.2 has no fragment in a
    request target; clients strip it)."""
    sid = "frag-session"
    target = f"{SEGMENT}?CMCD={_cmcd(sid, br=128, ot='a')}#frag"
    _warm(fast, SEGMENT)
    connection = Connection(fast.port)
    try:
        connection.send(_get(target))
        assert connection.answer()[0] == 200
        assert not on_fast_path(fast, connection)
    finally:
        connection.close()
    _until_closed(plain.port, _get(target) + _CLOSE)
    reports = [_session_report(origin, sid) for origin in (fast, plain)]
    assert reports[0]["requests"] == reports[1]["requests"] == 1


def _queued_bytes(origin: ThreadedOrigin, fast_path: bool) -> int | None:
    """Bytes the server holds for the one client connection: what its
    transport has not sent and, on the fast path, the request bytes not yet
    answered; None while it is still writing (not yet paused)."""
    site = origin.site
    runner_server = origin._runner.server
    assert site is not None and runner_server is not None

    async def measure() -> int | None:
        if fast_path:
            connections: list[FastPathProtocol] = list(site._fast_connections)
            if len(connections) != 1 or not connections[0]._write_paused:
                return None
            protocol = connections[0]
            assert protocol._transport is not None
            return protocol._transport.get_write_buffer_size() + len(protocol._buffer)
        handlers = [h for h in runner_server.connections if h.transport is not None]
        if len(handlers) != 1 or not handlers[0]._paused:
            return None
        transport = handlers[0].transport
        assert transport is not None
        return transport.get_write_buffer_size()

    return origin.call(measure())


def _queued_for_a_client_that_never_reads(origin: ThreadedOrigin, fast_path: bool) -> int:
    _warm(origin, SEGMENT)
    client = Connection(origin.port, receive_buffer_bytes=4096)
    try:
        client.send(_get(SEGMENT) * 300)
        deadline_s = time.monotonic() + 20
        queued = _queued_bytes(origin, fast_path)
        while queued is None and time.monotonic() < deadline_s:
            time.sleep(0.01)  # polls a condition: the server paused writing
            queued = _queued_bytes(origin, fast_path)
        assert queued is not None, "the server never paused writing"
        return queued
    finally:
        client.close()


def test_a_client_that_pipelines_and_never_reads_costs_no_more_than_on_aiohttp(
    packaged_root: Path,
) -> None:
    """The fast path queues at most one round past a lower high-water mark:
    no more than aiohttp's path holds for the same client."""
    measured = {}
    for fast_path in (True, False):
        origin = ThreadedOrigin(Settings(root=str(packaged_root), fast_path=fast_path)).start()
        try:
            measured[fast_path] = _queued_for_a_client_that_never_reads(origin, fast_path)
        finally:
            origin.stop()
    assert 0 < measured[True] <= measured[False]


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(f"GET {SEGMENT} HTTP/2.0", 505), (f"GET {SEGMENT}", 400)],
    ids=["http-2.0", "http-0.9"],
)
def test_other_http_versions_are_refused_as_http_1_1(
    fast: ThreadedOrigin, plain: ThreadedOrigin, request_line: str, status: int
) -> None:
    """RFC 9110 15.6.6 (505) and RFC 9112 2.3 (no HTTP/0.9): never a 200 that
    echoes the version asked for."""
    fast_bytes, plain_bytes = _both(fast, plain, _raw(request_line, "Host: x"))
    assert fast_bytes.startswith(f"HTTP/1.1 {status} ".encode())
    assert fast_bytes == plain_bytes


def test_a_malformed_request_is_logged_in_one_line_without_a_traceback(
    plain: ThreadedOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data = _raw(f"GET {SEGMENT} HTTP/1.1", "Host: a", "Host: b")
    assert _until_closed(plain.port, data).startswith(b"HTTP/1.0 400")
    malformed = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(malformed) == 1
    assert malformed[0].levelno == logging.INFO
    assert malformed[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "data",
    [
        _raw(
            f"GET {SEGMENT} HTTP/1.1", "Host: x", "Content-Length: 5", "Transfer-Encoding: chunked"
        )
        + b"0\r\n\r\n"
        + _CLOSE,
        _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Content-Length: 0", "Content-Length: 0")
        + _CLOSE,
        _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Transfer-Encoding: chunked, identity")
        + b"0\r\n\r\n"
        + _CLOSE,
        _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Transfer-Encoding : chunked")
        + b"0\r\n\r\n"
        + _CLOSE,
        _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Transfer-Encoding: xchunked") + _CLOSE,
        _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Content-Length: 5") + b"hello" + _CLOSE,
        _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Transfer-Encoding: chunked")
        + b"5\r\nhello\r\n0\r\n\r\n"
        + _CLOSE,
        _get(SEGMENT)
        + _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Content-Length: 3")
        + b"abc"
        + _CLOSE,
    ],
    ids=["cl-te", "double-cl", "te-list", "te-space", "te-unknown", "get-body", "chunked", "late"],
)
def test_framing_is_aiohttps_on_both_paths(
    fast: ThreadedOrigin, plain: ThreadedOrigin, data: bytes
) -> None:
    """No desync: every request with a body, or framing fields, gets exactly
    the bytes the aiohttp path sends (the fast path hands it over)."""
    fast_bytes, plain_bytes = _both(fast, plain, data)
    assert fast_bytes == plain_bytes


@pytest.mark.parametrize(
    "coding", ["identity, chunked", "gzip, chunked", "chunked, identity", "identity"]
)
def test_a_transfer_coding_other_than_chunked_ends_the_connection(
    fast: ThreadedOrigin, plain: ThreadedOrigin, coding: str
) -> None:
    """RFC 9112 6.1: a coding the origin does not understand is refused, and
    nothing sent after it is read as a request (no smuggling through a hop
    that frames the body differently)."""
    smuggled = _raw(f"GET {MASTER} HTTP/1.1", "Host: x", "Connection: close")
    data = _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", f"Transfer-Encoding: {coding}")
    fast_bytes, plain_bytes = _both(fast, plain, data + b"0\r\n\r\n" + smuggled)
    assert fast_bytes == plain_bytes
    assert fast_bytes.count(b"HTTP/1.") == 1
    assert fast_bytes.split(b" ", 2)[1] in (b"400", b"501")


def test_the_fields_players_send_stay_on_the_fast_path(fast: ThreadedOrigin) -> None:
    """The allowlist covers what browsers, AVPlayer and CDNs send with media
    requests: such requests are answered without leaving the fast path."""
    _warm(fast, SEGMENT)
    connection = Connection(fast.port)
    try:
        connection.send(
            _get(
                SEGMENT,
                "User-Agent: AppleCoreMedia/1.0.0 (iPhone; U; CPU OS 17_0 like Mac OS X)",
                "Accept: */*",
                "Accept-Language: en-GB,en;q=0.9",
                "Accept-Encoding: identity",
                "X-Playback-Session-Id: 6A1B2C3D-0000-4000-8000-123456789ABC",
                "Connection: keep-alive",
                "Range: bytes=0-99",
                "X-Forwarded-For: 203.0.113.7",
                "Via: 1.1 edge",
            )
        )
        status, _, body = connection.answer()
        assert (status, len(body)) == (206, 100)
        assert on_fast_path(fast, connection)
    finally:
        connection.close()


def test_timing_allow_origin_names_the_cors_origins_on_both_paths(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """W3C Resource Timing: without Timing-Allow-Origin a cross-origin player (dash.js)
    gets no transfer times for its segments.  Both transports send it, with the CORS
    origin."""
    request = _raw(f"GET {SEGMENT} HTTP/1.1", "Host: x", "Connection: close")
    for answer in _both(fast, plain, request):
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\ntiming-allow-origin: *\r\n" in head + b"\r\n", head
