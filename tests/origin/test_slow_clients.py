"""Slow and stalled clients against a real ``cadenza serve`` on loopback.

- 200 slowloris connections dribble header bytes and 4 connections ask for a
  large object and never read it, while a normal client keeps being served;
  the server closes the dribblers within ``keepalive_timeout_s`` and drops
  the stalled readers ``send_timeout_s`` after they stopped acknowledging.
- A connection over ``max_connections`` gets a 503 and is counted.
- A request body that stalls gets a 408 after ``body_timeout_s``.
- SIGTERM: the in-flight (slowly read) response completes whole, new
  connections are refused, idle keep-alive connections are closed, and the
  process exits 0.

Every loop here is bounded in count and time, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.origin.conftest import TRACK, free_port
from tests.origin.rawhttp import parse_answer

pytestmark = pytest.mark.slow

KEEPALIVE_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 2.0
SLOWLORIS = 200
STALLED_READERS = 4
STREAMED = f"/{TRACK}/flac/big-streamed.m4s"  # above the cache limit: read in chunks
CACHED = f"/{TRACK}/flac/big-cached.m4s"  # below it: one body in memory
SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"
MiB = 1024 * 1024


@dataclass
class Origin:
    process: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.status, response.read()


@contextlib.contextmanager
def serve(root: Path, tmp_path: Path, **settings: object) -> Iterator[Origin]:
    """``cadenza serve ROOT`` with ``CADENZA_*`` settings; stopped (and killed if
    it must be) on the way out."""
    port = free_port()
    env = {**os.environ, **{f"CADENZA_{k.upper()}": str(v) for k, v in settings.items()}}
    log = tmp_path / f"origin-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("cadenza")), "serve", str(root),
             "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    origin = Origin(process, port, root, log)
    try:
        for _ in range(200):
            try:
                _get(origin.url + "/healthz", 1.0)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"cadenza serve never answered: {log.read_text()}")
        yield origin
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


@pytest.fixture(scope="module")
def slow_root(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged track plus two large objects: 16 MiB (streamed) and 10 MiB
    (cached), both larger than loopback's socket buffers (4 MiB send)."""
    root = tmp_path_factory.mktemp("slow") / "root"
    shutil.copytree(packaged_root, root)
    noise = random.Random(7)
    (root / STREAMED[1:]).write_bytes(noise.randbytes(16 * MiB))
    (root / CACHED[1:]).write_bytes(noise.randbytes(10 * MiB))
    return root


@pytest.fixture(scope="module")
def guarded(slow_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    with serve(
        slow_root,
        tmp_path_factory.mktemp("guarded"),
        keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
        send_timeout_s=SEND_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_connections=1000,
        cache_max_object_bytes=12 * MiB,
    ) as origin:
        yield origin


def _connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # set before connecting: it bounds the window
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed: EOF or a reset, without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_slowloris_and_stalled_readers_do_not_starve_a_fast_client(guarded: Origin) -> None:
    dribblers: dict[socket.socket, float] = {}  # socket -> when it connected
    closed_after: list[float] = []
    stalled: list[tuple[socket.socket, str]] = []
    try:
        for _ in range(SLOWLORIS):
            sock = _connect(guarded.port)
            sock.sendall(b"GET /" + TRACK.encode() + b"/master.m3u8 HTTP/1.1\r\nHost: x\r\nX-D: ")
            dribblers[sock] = time.monotonic()
        for index in range(STALLED_READERS):
            target = STREAMED if index % 2 == 0 else CACHED
            sock = _connect(guarded.port, receive_buffer=4096)
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append((sock, target))

        # Dribble a byte a connection every 0.25 s; a normal client meanwhile.
        latencies: list[float] = []
        deadline = time.monotonic() + KEEPALIVE_TIMEOUT_S + 3.0
        while time.monotonic() < deadline and dribblers:
            for sock, opened in list(dribblers.items()):
                try:
                    gone = _closed_by_peer(sock)
                    if not gone:
                        sock.sendall(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    gone = True
                if gone:
                    closed_after.append(time.monotonic() - opened)
                    del dribblers[sock]
                    sock.close()
            started = time.monotonic()
            status, body = _get(guarded.url + SEGMENT)
            latencies.append(time.monotonic() - started)
            assert status == 200 and body
            time.sleep(0.25)

        assert not dribblers, f"{len(dribblers)} slowloris connections still open"
        assert len(closed_after) == SLOWLORIS
        assert max(closed_after) < KEEPALIVE_TIMEOUT_S + 1.5, max(closed_after)
        assert len(latencies) >= 5
        assert max(latencies) < 1.0, latencies

        # The stalled readers were dropped SEND_TIMEOUT_S after they stalled
        # (long since): reading now finds a cut body and a reset, not a wait.
        time.sleep(max(0.0, SEND_TIMEOUT_S + 1.0 - (time.monotonic() - deadline)))
        for sock, target in stalled:
            sock.settimeout(10)
            received = 0
            ended = "timeout"
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
                ended = "eof"
            except ConnectionResetError:
                ended = "reset"
            except TimeoutError:
                pass
            size = (guarded.root / target[1:]).stat().st_size
            assert ended in ("reset", "eof"), (target, received)
            assert received < size, (target, received, size)
        status, _ = _get(guarded.url + "/healthz")
        assert status == 200
    finally:
        for sock in [*dribblers, *(s for s, _ in stalled)]:
            sock.close()


def test_a_stalled_request_body_is_answered_408(guarded: Origin) -> None:
    with _connect(guarded.port) as sock:
        sock.sendall(
            b"POST /v1/beacons HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nConnection: close\r\n\r\n" + b'{"sid": "sl'
        )
        started = time.monotonic()
        sock.settimeout(BODY_TIMEOUT_S + 5)
        raw = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                raw += chunk
                if b"\r\n\r\n" in raw and raw.endswith(b"}"):
                    break
        waited = time.monotonic() - started
    answer = parse_answer(raw)
    assert answer.status == 408, answer
    assert json.loads(answer.body)["error"] == "request_timeout"
    assert BODY_TIMEOUT_S - 0.5 < waited < BODY_TIMEOUT_S + 2.0
    metrics = _get(guarded.url + "/metrics")[1].decode()
    assert 'cadenza_beacons_total{kind="post",result="timeout"} 1.0' in metrics


def test_connections_over_the_limit_are_refused_and_counted(
    slow_root: Path, tmp_path: Path
) -> None:
    limit = 20
    with serve(slow_root, tmp_path, max_connections=limit) as origin:
        time.sleep(0.3)  # the start-up health checks' connections are gone
        held = [_connect(origin.port) for _ in range(limit)]
        try:
            time.sleep(0.3)  # accepted by the server, not only by the kernel
            with _connect(origin.port) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                raw = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := extra.recv(65536):
                        raw += chunk
            answer = parse_answer(raw)
            assert answer.status == 503
            assert answer.headers["retry-after"] == "1"
            assert json.loads(answer.body)["error"] == "over_capacity"
        finally:
            for sock in held:
                sock.close()
        for _ in range(50):  # the held connections' handlers wind down
            with contextlib.suppress(OSError):
                if _get(origin.url + "/healthz")[0] == 200:
                    break
            time.sleep(0.1)
        metrics = _get(origin.url + "/metrics")[1].decode()
        refused = re.search(r"^cadenza_connections_refused_total (\S+)$", metrics, re.MULTILINE)
        assert refused is not None and float(refused.group(1)) >= 1  # and the polls' refusals


def test_sigterm_finishes_in_flight_responses_and_refuses_new_connections(
    slow_root: Path, tmp_path: Path
) -> None:
    size = (slow_root / STREAMED[1:]).stat().st_size
    expected = (slow_root / STREAMED[1:]).read_bytes()
    with serve(slow_root, tmp_path, shutdown_timeout_s=30, cache_max_object_bytes=MiB) as origin:
        idle = _connect(origin.port)  # a keep-alive connection between requests
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        download = _connect(origin.port, receive_buffer=65536)
        download.sendall(f"GET {STREAMED} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        while b"\r\n\r\n" not in received or len(received) < 512 * 1024:
            received += download.recv(65536)
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in head
        received = bytearray(body)

        origin.process.send_signal(signal.SIGTERM)
        refused_at: float | None = None
        idle_closed = False
        started = time.monotonic()
        while len(received) < size:
            assert time.monotonic() - started < 25, "the download stalled"
            chunk = download.recv(32 * 1024)
            if not chunk:
                break
            received += chunk
            time.sleep(0.005)  # a slow reader: about 5 MB/s at most
            if refused_at is None:
                try:
                    socket.create_connection(("127.0.0.1", origin.port), timeout=1).close()
                except ConnectionRefusedError:
                    refused_at = time.monotonic() - started
                    # Still downloading while new connections are refused:
                    assert len(received) < size
                    assert origin.process.poll() is None
            if not idle_closed:
                idle_closed = _closed_by_peer(idle)
        download.close()
        idle.close()
        assert refused_at is not None and refused_at < 5.0
        assert idle_closed
        assert len(received) == size
        assert bytes(received) == expected
        assert origin.process.wait(timeout=15) == 0
