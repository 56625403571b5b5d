"""The TCP delivery rate of a connection, from Linux ``TCP_INFO``.

``tcpi_delivery_rate`` (bytes per second, Linux 4.9+) is the kernel's latest
delivery-rate sample of the connection: data delivered over the time it took
to be acknowledged (the rate estimation BBR uses, draft-cheng-iccrg-delivery-rate-estimation).
Read when a session's next request arrives on the connection that carried its
previous object, it measures that object's delivery without the player's word
for it.  Elsewhere (another OS, a socket without it) there is no reading."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

# struct tcp_info (include/uapi/linux/tcp.h): tcpi_delivery_rate is the __u64 at
# byte 160, after 8 one-byte fields, 24 __u32, 2 __u64 rates, 2 __u64 byte
# counts, 6 __u32 counters.
_TCP_INFO: Final = getattr(socket, "TCP_INFO", 11)
_DELIVERY_RATE: Final = struct.Struct("=Q")
_DELIVERY_RATE_OFFSET: Final = 160
_TCP_INFO_BYTES: Final = 256


@runtime_checkable
class SocketOptions(Protocol):
    """What is read of a socket (``socket.socket`` and asyncio's wrapper)."""

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Connection:
    """The connection a request came on: its peer (``address:port``, which names
    it while it is open) and its socket, to read the delivery rate of."""

    peer: str
    sock: SocketOptions | None
    address: str = ""  # the peer's address without its port ("" when unknown)

    def delivery_rate_bps(self) -> float | None:
        return delivery_rate_bps(self.sock) if self.sock is not None else None

    def measures(self, client: str | None) -> bool:
        """Whether this connection's delivery rate is ``client``'s link: its peer is
        the client itself, not a proxy or CDN edge that forwarded the request
        (whose socket measures the hop to it, not the player's)."""
        return client is not None and self.address == client


def delivery_rate_bps(sock: SocketOptions) -> float | None:
    """The connection's latest delivery rate in bit/s; None where unknown (no
    ``TCP_INFO``, a kernel before 4.9, not TCP, or nothing delivered yet)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_BYTES)
    except (OSError, ValueError, TypeError):
        return None
    if len(raw) < _DELIVERY_RATE_OFFSET + _DELIVERY_RATE.size:
        return None
    (rate_bytes_per_s,) = _DELIVERY_RATE.unpack_from(raw, _DELIVERY_RATE_OFFSET)
    return 8.0 * rate_bytes_per_s if rate_bytes_per_s > 0 else None


def connection_of(peer: object, sock: object) -> Connection | None:
    """A :class:`Connection` from a transport's ``peername`` and ``socket`` extras."""
    if not isinstance(peer, (list, tuple)) or len(peer) < 2:
        return None
    readable = sock if isinstance(sock, SocketOptions) else None
    return Connection(f"{peer[0]}:{peer[1]}", readable, str(peer[0]))
