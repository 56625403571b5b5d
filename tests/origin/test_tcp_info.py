"""The connection a request came on: which client its delivery rate measures, and
the rate itself from a real loopback socket (Linux TCP_INFO); a forwarded request's
socket is never read for the session's ``etp``."""

from __future__ import annotations

import socket
import struct
from dataclasses import replace

from cadenza.abr.cmcd import parse_cmcd
from cadenza.abr.session import SessionState
from cadenza.origin.tcp_info import Connection, connection_of
from cadenza.origin.telemetry import media_timing


def test_a_connection_measures_only_its_peer() -> None:
    v4 = connection_of(("127.0.0.1", 40000), None)
    v6 = connection_of(("::1", 40000, 0, 0), None)
    assert v4 is not None and v6 is not None
    assert (v4.peer, v4.address, v6.peer, v6.address) == (
        "127.0.0.1:40000",
        "127.0.0.1",
        "::1:40000",
        "::1",
    )
    assert v4.measures("127.0.0.1") and v6.measures("::1")
    # A client a proxy forwarded for, or none known: the socket measures the proxy.
    assert not v4.measures("203.0.113.7") and not v4.measures(None)
    assert connection_of("/run/cadenza.sock", None) is None  # a Unix socket: no peer address


def test_the_delivery_rate_of_a_loopback_connection_is_read() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, peer = server.accept()
    try:
        accepted.sendall(b"x" * 200_000)
        received = 0
        while received < 200_000:
            received += len(client.recv(65536))
        connection = connection_of(peer, accepted)
        assert connection is not None and connection.sock is accepted
        rate_bps = connection.delivery_rate_bps()
        assert rate_bps is not None and rate_bps > 1e6  # loopback: far above any audio rung
    finally:
        for sock in (client, accepted, server):
            sock.close()


def _served_on(peer: str) -> SessionState:
    """A session whose previous 64 KB object went out on ``peer``'s connection at 10 s."""
    return replace(
        SessionState("s", 0.0, 0.0),
        last_media_s=10.0,
        last_media_bytes=64_000,
        direct_peer=peer,
    )


def test_a_forwarded_request_gives_etp_no_delivery_rate() -> None:
    """Behind a proxy the socket measures the proxy's hop (tcp_info.Connection.measures)."""

    class Fixed:
        def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
            raise AssertionError("a forwarded request's socket must not be read")

    connection = Connection("10.0.0.9:4711", Fixed(), address="10.0.0.9")
    state = _served_on("10.0.0.9:4711")
    forwarded = media_timing(10.5, 64_000, 4.0, connection, "192.0.2.1")(state, None)
    assert forwarded.origin_rate_bps == 8 * 64_000 / 0.5  # the request timing alone
    assert forwarded.direct_peer is None


def test_etp_checks_the_delivery_rate_against_this_requests_cmcd_only() -> None:
    """The rate is vetoed by the ``mtp`` the request carries (as the controller's
    samples are), never by one a session kept from an earlier request, which
    described another object."""

    class Rate:
        def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
            return bytes(160) + struct.pack("=Q", 5_000_000_000) + bytes(88)  # 40 Gb/s

    connection = Connection("127.0.0.1:4711", Rate(), address="127.0.0.1")
    state = replace(_served_on("127.0.0.1:4711"), last_mtp_kbps=200)  # an earlier request's
    timing = media_timing(10.5, 64_000, 4.0, connection, "127.0.0.1")
    vetoed = timing(state, parse_cmcd("mtp=200"))
    assert vetoed.origin_rate_bps == 8 * 64_000 / 0.5  # the request timing instead
    believed = timing(state, parse_cmcd("ot=a"))
    assert believed.origin_rate_bps == 40e9
    assert timing(state, None).origin_rate_bps == 40e9
