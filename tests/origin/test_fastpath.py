"""The hot-segment fast path (origin/transport/) against the aiohttp path it
stands in front of: the same bytes for what it answers, aiohttp's answers for
everything else on the same connection, in order (RFC 9112 9.3.2 pipelining)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast
from urllib.parse import quote

import pytest
from yarl import URL

from cadenza.origin.core.request import query_arguments
from cadenza.origin.pathways import PathwaySetting
from cadenza.origin.settings import Settings
from cadenza.origin.transport.fast import FastPathProtocol
from cadenza.origin.transport.responder import HotResponder
from cadenza.origin.transport.writev import unsent as _unsent
from tests.origin.conftest import TRACK
from tests.origin.rawhttp import ThreadedOrigin

SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"
OTHER_SEGMENT = f"/{TRACK}/aac-128k/seg-00002.m4s"
INIT = f"/{TRACK}/aac-128k/init.mp4"
MASTER = f"/{TRACK}/master.m3u8"


class Connection:
    """One keep-alive client connection that reads answers one by one."""

    def __init__(self, port: int, receive_buffer_bytes: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer_bytes is not None:  # before connecting: it sets the window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(262144)
        self._buffer += chunk
        return bool(chunk)

    def answer(self, *, head_only: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, header lines in order, body (by Content-Length; none for HEAD)."""
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a whole head: {self._buffer[:200]!r}")
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = [(n.strip(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])]
        length = 0 if head_only else int(dict(headers).get("Content-Length", "0"))
        while len(self._buffer) < length:
            if not self._fill():
                raise ConnectionError("closed inside a body")
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return status, headers, body

    def closed_by_server(self, within_s: float) -> bool:
        self.sock.settimeout(within_s)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False


def _get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _origin(root: Path, **overrides: object) -> ThreadedOrigin:
    settings = Settings(root=str(root), **overrides)  # type: ignore[arg-type]
    return ThreadedOrigin(settings).start()


@pytest.fixture(scope="module")
def fast(packaged_root: Path) -> Iterator[ThreadedOrigin]:
    origin = _origin(packaged_root)
    try:
        yield origin
    finally:
        origin.stop()


@pytest.fixture(scope="module")
def plain(packaged_root: Path) -> Iterator[ThreadedOrigin]:
    origin = _origin(packaged_root, fast_path=False)
    try:
        yield origin
    finally:
        origin.stop()


@pytest.fixture
def conn(fast: ThreadedOrigin) -> Iterator[Connection]:
    connection = Connection(fast.port)
    try:
        yield connection
    finally:
        connection.close()


def on_fast_path(origin: ThreadedOrigin, conn: Connection) -> bool:
    """Is ``conn`` still answered by the fast path (not handed to aiohttp)?"""
    site = origin.site
    assert site is not None

    async def peers() -> frozenset[object]:
        return site.fast_peers()

    return conn.sock.getsockname() in origin.call(peers())


def _warm(origin: ThreadedOrigin, path: str) -> None:
    """The first request for an object is a miss, which aiohttp answers: on a
    connection of its own, so the test's connection stays on the fast path."""
    connection = Connection(origin.port)
    try:
        connection.send(_get(path, "Connection: close"))
        assert connection.answer()[0] == 200
    finally:
        connection.close()


def test_a_hot_segment_gets_the_head_and_body_the_aiohttp_path_sends(
    fast: ThreadedOrigin, plain: ThreadedOrigin, conn: Connection
) -> None:
    """Header for header, in order, with the same values (Date aside)."""
    _warm(fast, SEGMENT)
    conn.send(_get(SEGMENT))
    status, headers, body = conn.answer()
    assert on_fast_path(fast, conn)  # answered without leaving the fast path
    reference = Connection(plain.port)
    reference.send(_get(SEGMENT))
    reference.answer()  # its miss
    reference.send(_get(SEGMENT))
    ref_status, ref_headers, ref_body = reference.answer()
    reference.close()
    assert (status, body) == (ref_status, ref_body)
    assert [n for n, _ in headers] == [n for n, _ in ref_headers]
    without_date = [(n, v) for n, v in headers if n != "Date"]
    assert without_date == [(n, v) for n, v in ref_headers if n != "Date"]
    assert ("X-Cadenza-Cache", "hit") in headers


def test_head_gets_the_get_headers_and_no_body(fast: ThreadedOrigin, conn: Connection) -> None:
    _warm(fast, INIT)
    conn.send(_get(INIT, method="HEAD") + _get(INIT))
    head_status, head_headers, _ = conn.answer(head_only=True)
    get_status, get_headers, body = conn.answer()  # starts right after HEAD's head
    assert head_status == get_status == 200
    assert dict(head_headers)["Content-Length"] == str(len(body))
    assert dict(head_headers)["ETag"] == dict(get_headers)["ETag"]
    assert on_fast_path(fast, conn)


def test_pipelined_requests_are_answered_in_order_across_the_handover(
    fast: ThreadedOrigin, conn: Connection
) -> None:
    """Fast answers (a hit, a manifest, a range), then an unsatisfiable range
    that aiohttp answers (416), then more on aiohttp."""
    _warm(fast, SEGMENT)
    conn.send(
        _get(SEGMENT)
        + _get(MASTER)
        + _get(SEGMENT, "Range: bytes=0-9")
        + _get(SEGMENT, "Range: bytes=99999999-")
        + _get(SEGMENT)
    )
    first = conn.answer()
    master = conn.answer()
    ranged = conn.answer()
    refused = conn.answer()
    last = conn.answer()
    assert [first[0], master[0], ranged[0], refused[0], last[0]] == [200, 200, 206, 416, 200]
    assert ranged[2] == first[2][:10]
    assert master[2].startswith(b"#EXTM3U")
    assert last[2] == first[2]
    assert not on_fast_path(fast, conn)


def test_a_head_split_across_packets_is_answered(fast: ThreadedOrigin, conn: Connection) -> None:
    _warm(fast, SEGMENT)
    request = _get(SEGMENT)
    for index in range(0, len(request), 7):
        conn.send(request[index : index + 7])
        time.sleep(0.002)
    status, headers, body = conn.answer()
    assert status == 200
    assert len(body) == int(dict(headers)["Content-Length"]) > 0
    assert on_fast_path(fast, conn)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (("Range: bytes=99999999-",), 416),
        (('CMCD-Session: sid="fast-1"',), 200),
        (("Connection: close",), 200),
        (('If-Match: "x"',), 412),
    ],
    ids=["unsatisfiable-range", "cmcd-header", "connection-close", "if-match"],
)
def test_requests_that_change_the_answer_go_to_aiohttp(
    fast: ThreadedOrigin, extra: tuple[str, ...], status: int
) -> None:
    _warm(fast, SEGMENT)
    connection = Connection(fast.port)
    try:
        connection.send(_get(SEGMENT, *extra))
        got, headers, _ = connection.answer()
        assert got == status
        assert not on_fast_path(fast, connection)
        names = {n for n, _ in headers}
        if "CMCD" in extra[0]:
            assert "CMSD-Static" in names  # the session's headers: aiohttp's path
    finally:
        connection.close()


def test_conditional_requests_get_the_answers_aiohttp_gives(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """RFC 9110 13.1.2/13.1.3 and 13.2.2: a matching If-None-Match (weak
    comparison, lists, ``*``) or an If-Modified-Since not before the file's time
    is a 304 without Content-Length; If-None-Match wins; a gzip answer has its
    own ETag.  The connection stays on the fast path for all of them."""
    probe = Connection(plain.port)
    probe.send(_get(SEGMENT) + _get(MASTER, "Accept-Encoding: gzip"))
    segment = dict(probe.answer()[1])
    master_gz = dict(probe.answer()[1])
    probe.close()
    etag, modified = segment["ETag"], segment["Last-Modified"]
    requests = [
        _get(SEGMENT, f"If-None-Match: {etag}"),
        _get(SEGMENT, f'If-None-Match: "other", W/{etag}'),
        _get(SEGMENT, "If-None-Match: *"),
        _get(SEGMENT, 'If-None-Match: "other"'),
        _get(SEGMENT, f"If-Modified-Since: {modified}"),
        _get(SEGMENT, "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"),
        _get(SEGMENT, 'If-None-Match: "other"', f"If-Modified-Since: {modified}"),
        _get(SEGMENT, "If-Modified-Since: not a date"),
        _get(SEGMENT, f"If-None-Match: {etag}", method="HEAD"),
        _get(MASTER, "Accept-Encoding: gzip", f"If-None-Match: {master_gz['ETag']}"),
        _get(MASTER, f"If-None-Match: {master_gz['ETag']}"),
    ]
    answers = _same_answers(fast, plain, requests, stays_fast=True, warm=True)
    assert [a[0] for a in answers] == [304, 304, 304, 200, 304, 200, 200, 200, 304, 304, 200]
    assert all("Content-Length" not in dict(a[1]) for a in answers if a[0] == 304)


def test_ranges_get_the_answers_aiohttp_gives(fast: ThreadedOrigin, plain: ThreadedOrigin) -> None:
    """RFC 9110 14: one range is a 206 with Content-Range; a malformed, reversed
    or multiple one is ignored (200); If-Range with another validator sends the
    whole; a Range on a manifest turns gzip off."""
    probe = Connection(plain.port)
    probe.send(_get(SEGMENT))
    etag = dict(probe.answer()[1])["ETag"]
    probe.close()
    requests = [
        _get(SEGMENT, "Range: bytes=0-9"),
        _get(SEGMENT, "Range: bytes=-5"),
        _get(SEGMENT, "Range: bytes=100-"),
        _get(SEGMENT, "Range: bytes=100-99999999"),
        _get(SEGMENT, "Range: bytes=9-2"),
        _get(SEGMENT, "Range: bytes=0-1,4-5"),
        _get(SEGMENT, "Range: items=0-5"),
        _get(SEGMENT, "Range: bytes=0-9", f"If-Range: {etag}"),
        _get(SEGMENT, "Range: bytes=0-9", 'If-Range: "other"'),
        _get(SEGMENT, "Range: bytes=0-9", f"If-None-Match: {etag}"),
        _get(SEGMENT, "Range: bytes=0-9", method="HEAD"),
        _get(MASTER, "Range: bytes=0-6", "Accept-Encoding: gzip"),
    ]
    answers = _same_answers(fast, plain, requests, stays_fast=True, warm=True)
    statuses = [a[0] for a in answers]
    assert statuses == [206, 206, 206, 206, 200, 200, 200, 206, 200, 304, 206, 206]
    assert answers[-1][2] == b"#EXTM3U"


def test_http_1_0_goes_to_aiohttp(fast: ThreadedOrigin, conn: Connection) -> None:
    _warm(fast, SEGMENT)
    conn.send(_get(SEGMENT, version="1.0"))
    status, _, body = conn.answer()
    assert status == 200
    assert body
    assert conn.closed_by_server(5.0)  # HTTP/1.0 without keep-alive: closed after


def test_a_query_with_another_argument_goes_to_aiohttp(
    fast: ThreadedOrigin, conn: Connection
) -> None:
    _warm(fast, MASTER)
    conn.send(_get(MASTER + "?codec=opus&utm_source=x"))
    status, _, body = conn.answer()
    assert status == 200
    assert b"aac" not in body.lower()
    assert not on_fast_path(fast, conn)


def test_filtered_manifests_are_answered_as_aiohttp_answers_them(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """Rendition filters (``codec``, ``min_bitrate``, ``max_bitrate``) with and
    without a session, gzip included."""
    sid = "fast-filtered"
    mpd = f"/{TRACK}/manifest.mpd"
    requests = [
        _get(MASTER + "?codec=opus"),
        _get(MASTER + "?codec=aac&max_bitrate=128", "Accept-Encoding: gzip"),
        _get(mpd + "?min_bitrate=200"),
        _get(f"{SEGMENT}?CMCD=" + _cmcd(sid, br=128, d=4000, mtp=3000, ot="a")),
        _get(f"{MASTER}?codec=aac&sid={sid}"),
        _get(f"{mpd}?CMCD=" + _cmcd(sid, ot="m") + "&codec=aac"),
        _get(SEGMENT + "?codec=opus"),  # a filter on a segment changes nothing
    ]
    answers = _same_answers(fast, plain, _with_warm(requests, fast, plain), stays_fast=True)
    assert b"opus" in answers[0][2].lower()
    assert b"aac" not in answers[0][2].lower()
    assert dict(answers[4][1])["X-Cadenza-Cache"] == "steered"


@pytest.mark.parametrize(
    ("query", "status"),
    [("codec=mp3", 400), ("min_bitrate=abc", 400), ("codec=opus&min_bitrate=99999", 404)],
    ids=["unknown-codec", "not-a-number", "matches-nothing"],
)
def test_a_bad_filter_gets_aiohttps_error(
    fast: ThreadedOrigin, plain: ThreadedOrigin, query: str, status: int
) -> None:
    answers = _same_answers(fast, plain, [_get(f"{MASTER}?{query}")], stays_fast=False)
    assert answers[0][0] == status


def test_a_session_request_with_a_range_goes_to_aiohttp(
    fast: ThreadedOrigin, conn: Connection
) -> None:
    conn.send(_get(SEGMENT + "?CMCD=" + _cmcd("fast-range", br=128), "Range: bytes=0-99"))
    status, headers, body = conn.answer()
    assert (status, len(body)) == (206, 100)
    assert "CMSD-Static" in dict(headers)
    assert not on_fast_path(fast, conn)


def test_a_malformed_head_gets_aiohttps_400(fast: ThreadedOrigin, conn: Connection) -> None:
    _warm(fast, SEGMENT)
    conn.send(_get(SEGMENT) + b"GET " + SEGMENT.encode() + b" HTTP/1.1\r\nBad Header\r\n\r\n")
    assert conn.answer()[0] == 200
    assert conn.answer()[0] == 400


def test_an_oversized_head_gets_the_same_verdict_as_without_the_fast_path(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    huge = "X-Filler: " + "a" * 20000
    verdicts = []
    for origin in (fast, plain):
        connection = Connection(origin.port)
        try:
            connection.send(_get(SEGMENT, huge))
            verdicts.append(connection.answer()[0])
        finally:
            connection.close()
    assert verdicts[0] == verdicts[1]
    assert verdicts[0] in (400, 431)


def test_a_head_ending_in_bare_newlines_gets_the_verdict_it_gets_without_the_fast_path(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """Not CRLF-framed: the fast path cannot see its end, so aiohttp decides."""
    request = f"GET {SEGMENT} HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n".encode()
    verdicts = []
    for origin in (fast, plain):
        connection = Connection(origin.port)
        try:
            connection.send(request)
            verdicts.append(connection.answer()[0])
            assert not on_fast_path(origin, connection)
        finally:
            connection.close()
    assert verdicts[0] == verdicts[1]


def _comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without ``Date``, and with CMSD ``etp`` (the origin's own timing
    of the session, which two servers measure differently) reduced to its presence."""
    return [
        (n, re.sub(r";etp=\d+", ";etp=(measured)", v) if n == "CMSD-Dynamic" else v)
        for n, v in headers
        if n != "Date"
    ]


def _same_answers(
    fast: ThreadedOrigin,
    plain: ThreadedOrigin,
    requests: list[bytes],
    *,
    stays_fast: bool,
    warm: bool = False,
) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """Send ``requests`` on one connection to each origin; the answers must be the
    same (``Date`` aside).  ``stays_fast``: the fast origin's connection must still
    be on the fast path afterwards (or must not, when False).  ``warm``: first
    send each once on a connection of its own to both, so both caches hold them."""
    if warm:
        for origin in (fast, plain):
            for request in requests:
                connection = Connection(origin.port)
                connection.send(request)
                connection.answer(head_only=request.startswith(b"HEAD"))
                connection.close()
    got = []
    for origin in (fast, plain):
        connection = Connection(origin.port)
        try:
            answers = []
            for request in requests:
                connection.send(request)
                answers.append(connection.answer(head_only=request.startswith(b"HEAD")))
            if origin is fast:
                assert on_fast_path(fast, connection) is stays_fast
        finally:
            connection.close()
        got.append([(st, _comparable(hs), body) for st, hs, body in answers])
    assert got[0] == got[1]
    return got[0]


def test_a_miss_is_loaded_and_answered_as_aiohttp_answers_it(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """Never asked before on either origin: a storage read, ``X-Cadenza-Cache:
    miss``, and the connection stays on the fast path for the next request."""
    miss = f"/{TRACK}/aac-256k/seg-00002.m4s"
    answers = _same_answers(fast, plain, [_get(miss), _get(miss)], stays_fast=True)
    assert [dict(a[1])["X-Cadenza-Cache"] for a in answers] == ["miss", "hit"]


def test_manifests_are_answered_as_aiohttp_answers_them(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """Identity and gzip (RFC 9110 8.4, Vary), master, media playlist and MPD."""
    requests = []
    for path in (MASTER, f"/{TRACK}/aac-128k/playlist.m3u8", f"/{TRACK}/manifest.mpd"):
        requests += [_get(path), _get(path, "Accept-Encoding: gzip, br"), _get(path)]
    answers = _same_answers(fast, plain, requests, stays_fast=True, warm=True)
    gzipped = answers[1]
    assert dict(gzipped[1])["Content-Encoding"] == "gzip"
    assert dict(gzipped[1])["Vary"] == "Accept-Encoding"
    assert gzip.decompress(gzipped[2]) == answers[0][2]


def test_a_missing_file_gets_aiohttps_404(fast: ThreadedOrigin, plain: ThreadedOrigin) -> None:
    missing = f"/{TRACK}/aac-128k/seg-09999.m4s"
    answers = _same_answers(fast, plain, [_get(missing)], stays_fast=False)
    assert answers[0][0] == 404


@pytest.mark.parametrize(
    "path",
    ["/player/x.mp4", "/v1/sessions/abc.m4s", "/track.m4s", f"/{TRACK}/.hidden.m4s"],
    ids=["player-route", "api-route", "no-folder", "hidden"],
)
def test_paths_other_routes_answer_or_safe_key_refuses_are_handed_over(
    fast: ThreadedOrigin, plain: ThreadedOrigin, path: str
) -> None:
    _same_answers(fast, plain, [_get(path)], stays_fast=False)


def test_content_steering_keeps_manifests_off_the_fast_path(packaged_root: Path) -> None:
    """With pathways every master playlist and MPD is rendered with them."""
    origin = _origin(
        packaged_root,
        pathways=(PathwaySetting("cdn-a", "http://127.0.0.1:9/a"),),
        content_steering_url="http://127.0.0.1:9/steer",
    )
    try:
        connection = Connection(origin.port)
        connection.send(_get(MASTER))
        status, _, body = connection.answer()
        assert status == 200
        assert b"#EXT-X-CONTENT-STEERING" in body
        assert not on_fast_path(origin, connection)
        connection.close()
    finally:
        origin.stop()


def test_fast_answers_are_counted_like_the_others(fast: ThreadedOrigin, conn: Connection) -> None:
    def count() -> float:
        metrics = Connection(fast.port)
        try:
            metrics.send(_get("/metrics"))
            text = metrics.answer()[2].decode()
        finally:
            metrics.close()
        for line in text.splitlines():
            wanted = ('route="segment"', 'status="200"', 'cache="hit"')
            if line.startswith("cadenza_requests_total{") and all(w in line for w in wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    _warm(fast, SEGMENT)
    before = count()
    conn.send(_get(SEGMENT) * 5)
    for _ in range(5):
        assert conn.answer()[0] == 200
    assert on_fast_path(fast, conn)
    assert count() == before + 5


def test_many_pipelined_requests_are_all_answered_to_a_slow_reader(
    fast: ThreadedOrigin,
) -> None:
    """Several rounds' worth of answers (1 MiB each) to a client with a small
    receive window: sent in part, queued, paused and resumed; none lost, none
    out of order, no byte out of place."""
    _warm(fast, SEGMENT)
    _warm(fast, INIT)
    slow = Connection(fast.port, receive_buffer_bytes=4096)
    try:
        slow.send((_get(SEGMENT) + _get(INIT)) * 30)
        answers = [slow.answer()[2] for _ in range(60)]
    finally:
        slow.close()
    segment, init = answers[0], answers[1]
    assert init[4:8] == b"ftyp"
    assert answers == [segment, init] * 30


def _answered_on_the_fast_path(origin: ThreadedOrigin) -> Connection:
    """A connection that has had a segment answered and is still on the fast path."""
    _warm(origin, SEGMENT)
    connection = Connection(origin.port)
    connection.send(_get(SEGMENT))
    assert connection.answer()[0] == 200
    assert on_fast_path(origin, connection)
    return connection


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(packaged_root: Path) -> None:
    origin = _origin(packaged_root, keepalive_timeout_s=0.3)
    try:
        connection = _answered_on_the_fast_path(origin)
        assert connection.closed_by_server(5.0)
        connection.close()
    finally:
        origin.stop()


def test_signing_turns_the_fast_path_off(packaged_root: Path) -> None:
    """Tokens are checked only on the full path: nothing may bypass it."""
    origin = _origin(packaged_root, signing_keys=("k" * 32,))
    try:
        connection = Connection(origin.port)
        connection.send(_get(SEGMENT))
        assert connection.answer()[0] == 403
        connection.send(_get(SEGMENT))
        assert connection.answer()[0] == 403
        assert not on_fast_path(origin, connection)
        connection.close()
    finally:
        origin.stop()


def test_the_setting_turns_the_fast_path_off(plain: ThreadedOrigin) -> None:
    connection = Connection(plain.port)
    try:
        connection.send(_get(SEGMENT) * 2)
        assert [connection.answer()[0] for _ in range(2)] == [200, 200]
        assert not on_fast_path(plain, connection)
    finally:
        connection.close()


def test_unsent_keeps_what_the_socket_did_not_take() -> None:
    pieces = [b"head", b"body-bytes", b"tail"]
    assert [bytes(p) for p in _unsent(pieces, 0)] == pieces
    assert [bytes(p) for p in _unsent(pieces, 3)] == [b"d", b"body-bytes", b"tail"]
    assert [bytes(p) for p in _unsent(pieces, 4)] == [b"body-bytes", b"tail"]
    assert [bytes(p) for p in _unsent(pieces, 9)] == [b"bytes", b"tail"]
    assert _unsent(pieces, 18) == []


async def test_what_one_writev_leaves_is_sent_after_it_in_order() -> None:
    """A small send buffer makes the socket take part of an answer: the rest
    goes through the transport, after it, byte for byte."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    protocol = FastPathProtocol(cast(HotResponder, None), asyncio.Protocol, set(), 60.0)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    pieces = [b"H" * 100, bytes(range(256)) * 4096, b"T" * 10]
    try:
        protocol._send(transport, pieces)
        assert transport.get_write_buffer_size() > 0  # the socket did not take it all
        received = bytearray()
        while len(received) < sum(map(len, pieces)):
            received += await asyncio.wait_for(loop.sock_recv(theirs, 65536), 10)
    finally:
        transport.close()
        theirs.close()
    assert bytes(received) == b"".join(pieces)


def test_shutdown_closes_connections_left_on_the_fast_path(packaged_root: Path) -> None:
    origin = _origin(packaged_root)
    stopped = False
    try:
        connection = _answered_on_the_fast_path(origin)
        origin.stop()
        stopped = True
        assert connection.closed_by_server(5.0)
        connection.close()
    finally:
        if not stopped:
            origin.stop()


def _cmcd(sid: str, **keys: object) -> str:
    """A CMCD query value (percent-encoded, as hls.js sends it) for ``sid``."""
    members = [f'sid="{sid}"', *(f"{k}={v}" for k, v in keys.items())]
    return quote(",".join(sorted(members)), safe="")


def _with_warm(requests: list[bytes], *origins: ThreadedOrigin) -> list[bytes]:
    """``requests``, after the files they name are cached in each of ``origins``."""
    for origin in origins:
        for path in (MASTER, f"/{TRACK}/manifest.mpd", SEGMENT, OTHER_SEGMENT, INIT):
            _warm(origin, path)
    return requests


def _session_requests(sid: str, *warmed: ThreadedOrigin) -> list[bytes]:
    """A player's session, as hls.js and dash.js send it in query mode (CTA-5004),
    its files first cached in each of ``warmed`` (so both say ``hit``)."""
    mpd = f"/{TRACK}/manifest.mpd"
    return _with_warm(
        [
            _get(MASTER + "?CMCD=" + _cmcd(sid, ot="m", sf="h", st="v", v=1)),
            _get(f"{SEGMENT}?CMCD=" + _cmcd(sid, br=128, d=4000, mtp=2000, ot="a", bl=4000)),
            _get(f"{MASTER}?sid={sid}"),
            _get(f"{MASTER}?sid={sid}", "Accept-Encoding: gzip"),
            _get(f"{mpd}?sid={sid}"),
            _get(f"{OTHER_SEGMENT}?CMCD=" + _cmcd(sid, br=128, d=4000, mtp=2400, ot="a", bl=8000)),
            _get(f"{OTHER_SEGMENT}?sid={sid}", method="HEAD"),
            _get(f"{INIT}?CMCD=" + _cmcd(sid, ot="i")),
            _get(f"{MASTER}?sid={sid}", "If-None-Match: *"),  # 304 (RFC 9110 13.1.2)
            _get(f"{SEGMENT}?CMCD=" + _cmcd(sid, br=128, ot="a"), "If-None-Match: *"),  # no CMSD
        ],
        *warmed,
    )


def test_session_requests_are_answered_as_aiohttp_answers_them(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """Steered manifests (private, the session's start rung first) and segments
    with CMSD (CTA-5006), header for header and byte for byte, on a
    connection that stays on the fast path."""
    answers = _same_answers(
        fast, plain, _session_requests("fast-same", fast, plain), stays_fast=True
    )
    steered = dict(answers[2][1])
    assert steered["X-Cadenza-Cache"] == "steered"
    assert steered["Cache-Control"].startswith("private")
    segment = dict(answers[1][1])
    assert segment["CMSD-Static"]
    assert segment["Cache-Control"].startswith("private")
    assert "CMSD-Static" not in dict(answers[7][1])  # an init segment gets none
    assert [answers[8][0], answers[9][0]] == [304, 304]


def _session_report(origin: ThreadedOrigin, sid: str) -> dict[str, object]:
    connection = Connection(origin.port)
    try:
        connection.send(_get(f"/v1/sessions/{sid}"))
        status, _, body = connection.answer()
        assert status == 200
        report: dict[str, object] = json.loads(body)
        return report
    finally:
        connection.close()


def test_session_requests_are_folded_into_the_session_once_each(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    sid = "fast-folded"
    _same_answers(fast, plain, _session_requests(sid, fast, plain), stays_fast=True)
    reports = [_session_report(origin, sid) for origin in (fast, plain)]
    assert reports[0]["requests"] == reports[1]["requests"] == 5  # the CMCD ones


def test_a_session_request_that_fails_is_folded_in_once(
    fast: ThreadedOrigin, plain: ThreadedOrigin
) -> None:
    """A missing file: aiohttp answers its 404, and the CMCD it carried counts
    once (the fast path touches the session only after its loads succeed)."""
    sid = "fast-missing"
    missing = f"/{TRACK}/aac-128k/seg-09999.m4s?CMCD=" + _cmcd(sid, br=128, ot="a")
    answers = _same_answers(fast, plain, [_get(missing)], stays_fast=False)
    assert answers[0][0] == 404
    assert [_session_report(o, sid)["requests"] for o in (fast, plain)] == [1, 1]


def test_without_steering_a_session_request_gets_the_shared_answer(packaged_root: Path) -> None:
    origin = _origin(packaged_root, guidance=False)
    try:
        connection = Connection(origin.port)
        connection.send(_get(f"{SEGMENT}?CMCD=" + _cmcd("fast-off", br=128, ot="a")))
        _, headers, _ = connection.answer()
        assert dict(headers)["Cache-Control"].startswith("public")
        assert "CMSD-Static" not in dict(headers)
        assert on_fast_path(origin, connection)
        connection.close()
    finally:
        origin.stop()


@pytest.mark.parametrize(
    "query",
    [
        "sid=abc",
        "CMCD=" + quote('br=128,ot=a,sid="x y"', safe=""),
        "CMCD=br%3D128&sid=s1",
        "sid=%E2%82%AC",  # UTF-8
        "sid=%zz",  # not an escape: kept as it is
        "sid=",
        "codec=aac&max_bitrate=128&sid=s2",
    ],
)
def test_query_arguments_decode_as_aiohttp_decodes_them(query: str) -> None:
    arguments = query_arguments(query.encode())
    assert arguments == dict(URL("/x?" + query).query)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "feature=opus",
        "sid=a&utm_source=x",
        "sid=a&sid=b",
        "sid",
        "sid=a+b",
        "sid=a;CMCD=b",
        "sid=%FF",
        "sid=a&",
        "%73id=a",
    ],
)
def test_other_queries_are_not_read_as_query_arguments(query: str) -> None:
    assert query_arguments(query.encode()) is None


def test_a_session_answer_that_raises_is_handed_to_aiohttp(
    fast: ThreadedOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (or a store failing past its fallback) must not leave the request
    unanswered: aiohttp answers it, with its own error mapping."""

    def broken(*_args: object, **_kwargs: object) -> bytes:
        raise RuntimeError("a bug in a head")

    # Rendering heads to bytes is the fast transport's alone.
    monkeypatch.setattr("cadenza.origin.transport.responder.render_head", broken)
    connection = Connection(fast.port)
    try:
        connection.send(_get(f"{SEGMENT}?CMCD=" + _cmcd("fast-bug", br=128, ot="a")))
        status, headers, _ = connection.answer()
        assert status == 200
        assert "CMSD-Static" in dict(headers)  # aiohttp's answer, unpatched
        assert not on_fast_path(fast, connection)
    finally:
        connection.close()


def _handovers(origin: ThreadedOrigin, reason: str) -> float:
    """``cadenza_fast_path_handovers_total{reason}`` as /metrics reports it."""
    connection = Connection(origin.port)
    try:
        connection.send(_get("/metrics"))
        status, _, body = connection.answer()
        assert status == 200
    finally:
        connection.close()
    prefix = f'cadenza_fast_path_handovers_total{{reason="{reason}"}} '
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (_get(MASTER + "?utm_source=x"), "query"),
        (_get(SEGMENT, version="1.0"), "version"),
        (_get(SEGMENT, method="OPTIONS"), "method"),
        (_get(SEGMENT, "Connection: close"), "header"),
        (_get(f"/{TRACK}/aac-128k/seg-09999.m4s"), "load_failed"),
        (_get(SEGMENT, "Range: bytes=99999999-"), "range"),
        (_get(f"/{TRACK}/presentation.json"), "path"),
        (f"GET {SEGMENT} HTTP/1.1\nHost: x\n\n".encode(), "malformed"),
        (_get(SEGMENT, "Connection: Upgrade", "Upgrade: h2c"), "upgrade"),
        (_get(SEGMENT + "#top"), "target"),
        (_get(SEGMENT, "X-Unknown: 1"), "header"),
    ],
    ids=[
        "query",
        "version",
        "method",
        "header",
        "load-failed",
        "range",
        "path",
        "bare-lf",
        "upgrade",
        "fragment",
        "off-the-allowlist",
    ],
)
def test_each_handover_is_counted_with_its_reason(
    fast: ThreadedOrigin, request_bytes: bytes, reason: str
) -> None:
    """Operators see why connections leave the fast path."""
    _warm(fast, SEGMENT)
    before = _handovers(fast, reason)
    connection = Connection(fast.port)
    try:
        connection.send(request_bytes)
        connection.answer()
    finally:
        connection.close()
    # The /metrics request is itself handed over ("path"), counted before it renders.
    assert _handovers(fast, reason) == before + 1 + (reason == "path")
