"""Differential HTTP/1.1 testing: the same request bytes to two origins, and h11's
reading of those bytes as the reference.

- :func:`read_requests` is the reference parser: h11 (an HTTP/1.1 implementation
  independent of llhttp, which both origin paths use) says how many requests the
  bytes hold, each one's method, target, version, headers and body, or where it
  refuses them; with two tightenings and one allowance, each from RFC 9112
  (see :func:`read_requests`).
- :func:`exchange` sends bytes exactly as given over one loopback connection,
  in the pieces given (one ``send`` each, with ``TCP_NODELAY``), reads the
  replies expected, then sends a probe request that only a connection the
  server kept open answers, and splits what came back into replies
  (:func:`split_replies`).  Every read has a deadline.
- :func:`normalise` turns an exchange into what must be equal between the two
  servers (see its docstring for what is dropped and why).
"""

from __future__ import annotations

import contextlib
import enum
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import h11

DEADLINE_S: Final = 10.0  # per exchange: a bound, never the expected way out
PROBE: Final = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
# Versions an HTTP/1.1 server takes in an HTTP/1.x request line (RFC 9112 2.3);
# h11 takes any ``HTTP/<digit>.<digit>``.
HTTP1_VERSIONS: Final = frozenset({b"1.0", b"1.1"})
VOLATILE_PATHS: Final = (b"/metrics",)  # bodies that change between two calls


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"  # every byte belongs to a complete request h11 accepts
    REJECTED = "rejected"  # the request after the accepted ones is refused
    TOLERATED = "tolerated"  # refused by h11, but RFC 9112 lets a recipient take it
    INCOMPLETE = "incomplete"  # h11 waits for more bytes


@dataclass(frozen=True, slots=True)
class Request:
    """One request as h11 read it (header names lower-cased, obs-fold unfolded)."""

    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    must_close: bool  # the server must close once it has answered it


@dataclass(frozen=True, slots=True)
class Reading:
    requests: tuple[Request, ...]  # accepted, up to the first that must close
    verdict: Verdict
    reason: str  # why the next request is refused (REJECTED, TOLERATED), else ""
    rejected_method: bytes = b""  # the refused request's first word, if any


def _tokens(values: Sequence[bytes]) -> set[bytes]:
    return {token.strip().lower() for value in values for token in value.split(b",")}


def _must_close(version: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """RFC 9112 9.6 (``close``), 9.3 (HTTP/1.0 without ``keep-alive``) and 6.1
    (both Content-Length and Transfer-Encoding: "the server MUST close the
    connection after responding to such a request")."""
    connection = _tokens([value for name, value in headers if name == b"connection"])
    names = {name for name, _ in headers}
    if b"close" in connection:
        return True
    if version == b"1.0" and b"keep-alive" not in connection:
        return True
    return b"content-length" in names and b"transfer-encoding" in names


# RFC 9112 3: a recipient MAY split the request line on runs of these.
_LINE_WHITESPACE: Final = re.compile(rb"[ \t\x0b\x0c\r]+")


def read_requests(data: bytes) -> Reading:
    """The requests in ``data`` as h11 reads them, with two tightenings and one
    allowance:

    - a version other than 1.0 and 1.1 is refused (RFC 9112 2.3: such a server
      answers 505 or 400; RFC 9113 3: HTTP/2 is never sent in HTTP/1.1 framing);
    - a request with both Content-Length and Transfer-Encoding must close the
      connection after its answer (RFC 9112 6.1; h11 keeps it open);
    - a request line that h11 refuses only for its whitespace (runs of SP, HTAB,
      VT, FF or CR between the three words) is TOLERATED: RFC 9112 3 lets a
      recipient split it on whitespace, so either verdict is right as long as
      both paths give the same one.

    HTTP/1.0 with ``keep-alive`` stays open (RFC 9112 9.3; h11 closes it).
    Reading stops after the first request whose answer must close the
    connection: a server reads nothing after it."""
    reading = _parse(data)
    if reading.verdict is not Verdict.REJECTED or not reading.reason.startswith(
        "illegal request line"
    ):
        return reading
    offset = _offset_of_refused(data, reading)
    line, newline, rest = data[offset:].partition(b"\n")
    words = _LINE_WHITESPACE.split(line.strip(b" \t\x0b\x0c\r"))
    cr = b"\r" if line.endswith(b"\r") else b""
    respelled = data[:offset] + b" ".join(words) + cr + newline + rest
    if len(words) != 3 or respelled == data:
        return reading
    tolerated = _parse(respelled)
    if tolerated.verdict is not Verdict.ACCEPTED:
        return reading
    return Reading(tolerated.requests, Verdict.TOLERATED, reading.reason)


def _offset_of_refused(data: bytes, reading: Reading) -> int:
    """Where the refused request starts: after the accepted ones' heads and bodies."""
    offset = 0
    for request in reading.requests:
        end = data.find(b"\r\n\r\n", offset)
        offset = len(data) if end < 0 else end + 4 + len(request.body)
    return offset


def _parse(data: bytes) -> Reading:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    requests: list[Request] = []
    current: h11.Request | None = None
    body = bytearray()
    # Bounded: every other event consumes bytes.
    for _ in range(2 * len(data) + 4):
        unread = bytes(conn.trailing_data[0])
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            word = unread.lstrip(b"\r\n").split(b" ", 1)[0]
            return Reading(tuple(requests), Verdict.REJECTED, str(exc), word)
        if isinstance(event, h11.Request):
            if event.http_version not in HTTP1_VERSIONS:
                reason = f"HTTP/{event.http_version.decode()} is not HTTP/1.x"
                return Reading(tuple(requests), Verdict.REJECTED, reason, bytes(event.method))
            current, body = event, bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert current is not None
            headers = tuple((bytes(n), bytes(v)) for n, v in current.headers)
            close = _must_close(bytes(current.http_version), headers)
            requests.append(
                Request(
                    bytes(current.method),
                    bytes(current.target),
                    bytes(current.http_version),
                    headers,
                    bytes(body),
                    close,
                )
            )
            if close:
                return Reading(tuple(requests), Verdict.ACCEPTED, "")
            conn = _answered(conn)
            current = None
        elif event is h11.NEED_DATA:
            pending = current is not None or bool(conn.trailing_data[0])
            verdict = Verdict.INCOMPLETE if pending else Verdict.ACCEPTED
            return Reading(tuple(requests), verdict, "")
        else:  # PAUSED or ConnectionClosed: not reached without an EOF or a 101
            return Reading(tuple(requests), Verdict.INCOMPLETE, repr(event))
    raise AssertionError("h11 did not finish reading")  # pragma: no cover


def _answered(conn: h11.Connection) -> h11.Connection:
    """Answer the request just read (404: refusing any upgrade or CONNECT tunnel)
    so that h11 reads the next one; a new reader for the rest where h11 would
    close (HTTP/1.0 with keep-alive)."""
    conn.send(h11.Response(status_code=404, headers=[(b"content-length", b"0")]))
    conn.send(h11.EndOfMessage())
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return conn
    fresh = h11.Connection(h11.SERVER)
    fresh.receive_data(bytes(conn.trailing_data[0]))
    return fresh


class Ending(enum.StrEnum):
    CLOSED = "closed"  # the server closed (FIN or reset: which one races the unread bytes)
    OPEN = "open"  # still open when the deadline passed


@dataclass(frozen=True, slots=True)
class Reply:
    version: bytes  # of the status line
    status: int
    headers: tuple[tuple[str, str], ...]  # in order, names as sent
    body: bytes  # de-chunked

    def header(self, name: str) -> list[str]:
        return [value for field, value in self.headers if field.lower() == name]


@dataclass(frozen=True, slots=True)
class Exchange:
    replies: tuple[Reply, ...]
    ending: Ending
    rest: bytes  # what followed the last whole reply


def exchange(
    port: int,
    pieces: Sequence[bytes],
    expected: int,
    head_flags: Sequence[bool | None],
    *,
    probe: bool = True,
    deadline_s: float = DEADLINE_S,
) -> Exchange:
    """Send ``pieces`` (one ``send`` each, ``TCP_NODELAY``) on a new loopback
    connection and read until ``expected`` whole replies are in, the server
    closes, or ``deadline_s`` passes; then, if it is still open, send
    :data:`PROBE` (``Connection: close``) and read until it closes: a server
    that kept the connection answers the probe.  ``head_flags``: as for
    :func:`split_replies`."""
    deadline = time.monotonic() + deadline_s
    flags = [*head_flags, False]  # the probe is a GET
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _send(sock, pieces)
        closed = _read(sock, received, deadline, lambda: _whole(received, flags) >= expected)
        if not closed and probe:
            _send(sock, [PROBE])
            closed = _read(sock, received, deadline, lambda: False)
    replies, rest = split_replies(bytes(received), flags)
    return Exchange(replies, Ending.CLOSED if closed else Ending.OPEN, rest)


def _send(sock: socket.socket, pieces: Sequence[bytes]) -> None:
    # The server may answer early and close: then read what it said.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for piece in pieces:
            sock.sendall(piece)


def _whole(received: bytearray, flags: Sequence[bool | None]) -> int:
    return len(split_replies(bytes(received), flags)[0])


def _read(
    sock: socket.socket, received: bytearray, deadline: float, enough: Callable[[], bool]
) -> bool:
    """Read into ``received`` until ``enough()``, the close (True) or the deadline."""
    while not enough() and (left_s := deadline - time.monotonic()) > 0:
        sock.settimeout(left_s)
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        if not chunk:
            return True
        received += chunk
    return False


def split_replies(
    data: bytes, head_flags: Sequence[bool | None]
) -> tuple[tuple[Reply, ...], bytes]:
    """The whole replies at the start of ``data``, and what is left after them.

    ``head_flags[i]``: the i-th reply answers a HEAD (no body); None: a HEAD
    that may not have been read as one (a refused request), so an error answer
    has its body."""
    replies: list[Reply] = []
    while data:
        head, sep, after = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        try:
            status = int(rest[:3])
        except ValueError:
            break
        headers = tuple(
            (name.decode("latin-1").strip(), value.decode("latin-1").strip())
            for name, _, value in (line.partition(b":") for line in lines[1:])
        )
        fields = {name.lower(): value for name, value in headers}
        flag = head_flags[len(replies)] if len(replies) < len(head_flags) else False
        is_head = status < 400 if flag is None else flag
        if is_head or status in (204, 304) or status < 200:
            body, data = b"", after
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            parsed = _dechunk(after)
            if parsed is None:
                break
            body, data = parsed
        elif "content-length" in fields:
            length = int(fields["content-length"]) if fields["content-length"].isdigit() else -1
            if not 0 <= length <= len(after):
                break  # cut, or not a length: left in the rest
            body, data = after[:length], after[length:]
        else:  # delimited by the close
            body, data = after, b""
        replies.append(Reply(version, status, headers, body))
        if status == 101:
            break  # another protocol follows
    return tuple(replies), data


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    """(body, rest) of a chunked body at the start of ``data``; None if cut."""
    out = bytearray()
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None  # not chunked framing: left in the rest
        if size == 0:
            end = data.find(b"\r\n")  # no trailers are sent: the blank line
            return (bytes(out), data[end + 2 :]) if end >= 0 else None
        if len(data) < size + 2:
            return None
        out += data[:size]
        data = data[size + 2 :]


Normal = tuple[object, ...]


def normalise_reply(reply: Reply, volatile: bool = False) -> Normal:
    """What must be equal between the two servers' replies.

    - ``Date`` is dropped (the second it was sent in).
    - ``Server`` is kept: both paths claim aiohttp's ``Server`` line, and a
      difference would tell a client which path answered.
    - Header names compare case-insensitively (RFC 9110 5.1); fields are
      sorted by name, keeping the order of a repeated field's lines, the only
      order with a meaning (RFC 9110 5.3).
    - ``volatile`` (``/metrics``): the body and its Content-Length are dropped.
    - CMSD ``etp`` is reduced to its presence: it is the origin's own timing of
      the session (request gaps, TCP delivery rates), which two servers measure
      differently.
    """
    dropped = {"date", "content-length"} if volatile else {"date"}
    headers = sorted(
        (
            (name.lower(), _measured(name, value))
            for name, value in reply.headers
            if name.lower() not in dropped
        ),
        key=lambda field: field[0],
    )
    return (reply.version, reply.status, tuple(headers), b"<volatile>" if volatile else reply.body)


def _measured(name: str, value: str) -> str:
    if name.lower() != "cmsd-dynamic":
        return value
    return re.sub(r";etp=[0-9]+", ";etp=(measured)", value)


def normalise(result: Exchange, targets: Sequence[bytes] = ()) -> Normal:
    """An exchange as compared: its normalised replies, the ending, the rest.

    Volatile replies (body and Content-Length not compared): those to a
    :data:`VOLATILE_PATHS` target (``targets[i]``: the i-th reply's) and
    aiohttp's ``400`` parser errors, whose ``text/plain`` body quotes the bytes
    the parser had buffered when it stopped, which depends on how they arrived.
    What follows a parser error is dropped too: its body, when the request was
    read as a HEAD here but could not be read there (it has one then)."""
    volatile = [
        _volatile(reply, targets[i] if i < len(targets) else b"")
        for i, reply in enumerate(result.replies)
    ]
    replies = tuple(map(normalise_reply, result.replies, volatile))
    after_error = bool(result.replies) and result.replies[-1].status == 400 and volatile[-1]
    return (replies, result.ending.value, b"<volatile>" if after_error else result.rest)


def _volatile(reply: Reply, target: bytes) -> bool:
    if target.startswith(VOLATILE_PATHS):
        return True
    plain = reply.header("content-type")[:1] == ["text/plain; charset=utf-8"]
    return reply.status == 400 and plain
