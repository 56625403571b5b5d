"""Test helpers that speak HTTP/1.1 over raw loopback sockets, byte for byte.

aiohttp's and urllib's clients normalise what they send (dot segments,
percent-encoding, header values); hostile-input tests need the exact bytes
on the wire.  :class:`ThreadedOrigin` runs ``create_app(settings)`` with
``cadenza serve``'s runner and site on a loopback port, in a thread of its
own, so synchronous hypothesis tests can drive it and look at its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from cadenza.origin.app import create_app
from cadenza.origin.server import make_runner, make_site
from cadenza.origin.settings import Settings
from cadenza.origin.site import GuardedSite

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        line, _, rest = data.partition(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def parse_answer(raw: bytes) -> Answer:
    """One HTTP/1.1 response read to EOF (the request said ``Connection: close``)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no complete response head in {raw[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return Answer(status, headers, body)


def request(
    port: int,
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
    timeout_s: float = 15.0,
) -> Answer:
    """Send one request exactly as given, read the answer to EOF."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if content_length and (body or method in (b"POST", b"PUT")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    payload = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        # The server may answer early (413, 400) and close: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_answer(b"".join(chunks))


def get(port: int, target: str | bytes, **headers: str) -> Answer:
    raw = target.encode("utf-8") if isinstance(target, str) else target
    pairs = [
        (name.replace("_", "-").encode(), value.encode("utf-8")) for name, value in headers.items()
    ]
    return request(port, b"GET", raw, pairs)


class ThreadedOrigin:
    """``create_app(settings)`` served on 127.0.0.1 (a free port) from a thread with its
    own loop, through ``cadenza serve``'s runner and site."""

    def __init__(self, settings: Settings) -> None:
        self.settings = dataclasses.replace(settings, host="127.0.0.1", port=0)
        self.app = create_app(self.settings)
        self.port = 0
        self.site: GuardedSite | None = None
        self._loop = asyncio.new_event_loop()
        # The same runner and site as ``cadenza serve``: header limits, timeouts.
        self._runner = make_runner(self.app, self.settings)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="threaded-origin", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self) -> None:
        await self._runner.setup()
        site = make_site(self._runner, self.settings)
        await site.start()
        self.site = site
        self.port = site.port

    def start(self) -> ThreadedOrigin:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the threaded origin did not start")
        return self

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (to look at its state safely)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
