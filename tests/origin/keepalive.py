"""One keep-alive GET over a raw socket: the fast transport answers only
keep-alive requests (urllib sends ``Connection: close``, which aiohttp
answers), and some tests need the client's source address chosen."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    head: bytes  # the status line and fields, the blank line included
    body: bytes

    @property
    def status(self) -> int:
        return int(self.head[9:12])

    def field(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1") + b":"
        for line in self.head.split(b"\r\n")[1:]:
            if line.lower().startswith(wanted):
                return line[len(wanted) :].strip().decode("latin-1")
        return None


def keepalive_get(
    port: int, target: str, *, source: str | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """``GET target`` on ``127.0.0.1:port`` (from ``source`` when given), HTTP/1.1
    without ``Connection: close``; the body read by its Content-Length."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=None if source is None else (source, 0)
    ) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a whole head: {data[:200]!r}")
            data += chunk
        end = data.index(b"\r\n\r\n") + 4
        reply = Reply(data[:end], b"")
        length = int(reply.field("Content-Length") or 0)
        body = data[end:]
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the whole body")
            body += chunk
    return Reply(reply.head, body[:length])
