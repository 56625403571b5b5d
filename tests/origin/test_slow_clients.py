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

Every wait here is on something observable (a connection closed, the server's
end of a connection gone from ``/proc/net/tcp``, the accept queue empty), bounded
by a deadline that only a hang reaches; the wall-clock bounds (how soon the
dribblers are closed, how fast the normal client is served, how long the 408
took) are the ``stress`` cases, run by ``make stress``.  Everything talks to
127.0.0.1 only.
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
from tests.origin.waiting import connections_held, listener, tcp_row, wait_for

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

    def answering() -> bool:
        assert process.poll() is None, f"cadenza serve exited: {log.read_text()}"
        try:
            return _get(origin.url + "/healthz", 1.0)[0] == 200
        except OSError:
            return False

    try:
        wait_for(answering, "cadenza serve answers /healthz", poll_s=0.1)
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


@dataclass
class Attack:
    """What :func:`_attack` saw."""

    closed_after: list[float]  # each dribbler: seconds from connecting to the server's close
    latencies: list[float]  # each normal request made while dribblers were open
    stalled: list[tuple[str, int, str]]  # each stalled reader: target, bytes read, how it ended


def _attack(guarded: Origin) -> Attack:
    """200 slowloris connections and 4 stalled readers, with a normal client served
    meanwhile; returns once the server has closed every dribbler and dropped every
    stalled reader (each a condition, waited for with a deadline only a hang reaches)."""
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

        # Dribble a byte a connection every 0.25 s, and a normal request each round,
        # until the server has closed every dribbler.
        latencies: list[float] = []

        def round_of_dribbles() -> bool:
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
            if not dribblers:
                return True
            started = time.monotonic()
            status, body = _get(guarded.url + SEGMENT, timeout_s=30.0)
            latencies.append(time.monotonic() - started)
            assert status == 200 and body
            return False

        wait_for(round_of_dribbles, "the server closed every slowloris connection", poll_s=0.25)

        # The stalled readers: the server drops each SEND_TIMEOUT_S after it stopped
        # acknowledging (TCP_USER_TIMEOUT), and its end of the connection leaves the
        # kernel's table.  Only then is it read: a cut body and a reset, not a wait.
        outcomes: list[tuple[str, int, str]] = []
        for sock, target in stalled:
            client_port = sock.getsockname()[1]
            wait_for(
                lambda: tcp_row(guarded.port, client_port) is None,  # noqa: B023 (called here)
                f"the server dropped the stalled reader of {target}",
                poll_s=0.1,
            )
            sock.settimeout(30)
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
            outcomes.append((target, received, ended))
        return Attack(closed_after, latencies, outcomes)
    finally:
        for sock in [*dribblers, *(s for s, _ in stalled)]:
            sock.close()


def test_slowloris_and_stalled_readers_do_not_starve_a_fast_client(guarded: Origin) -> None:
    attack = _attack(guarded)
    assert len(attack.closed_after) == SLOWLORIS
    # The normal client was served (each answer a 200, checked as it came) while the
    # dribblers were open: the first round always makes one request.
    assert attack.latencies
    for target, received, ended in attack.stalled:
        size = (guarded.root / target[1:]).stat().st_size
        assert ended in ("reset", "eof"), (target, received)
        assert received < size, (target, received, size)
    status, _ = _get(guarded.url + "/healthz")
    assert status == 200


@pytest.mark.stress
def test_slowloris_is_closed_in_time_and_the_fast_client_stays_fast(guarded: Origin) -> None:
    attack = _attack(guarded)
    assert max(attack.closed_after) < KEEPALIVE_TIMEOUT_S + 1.5, max(attack.closed_after)
    assert len(attack.latencies) >= 5
    assert max(attack.latencies) < 1.0, attack.latencies


def _stalled_body(guarded: Origin) -> tuple[bytes, float]:
    """A beacon whose body stops after 11 of its 100 bytes: the raw answer, and how
    long after sending it came."""
    with _connect(guarded.port) as sock:
        sock.sendall(
            b"POST /v1/beacons HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nConnection: close\r\n\r\n" + b'{"sid": "sl'
        )
        started = time.monotonic()
        sock.settimeout(BODY_TIMEOUT_S + 30)  # a hang bound, not a measurement
        raw = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                raw += chunk
                if b"\r\n\r\n" in raw and raw.endswith(b"}"):
                    break
        return raw, time.monotonic() - started


def _timeouts_counted(guarded: Origin) -> float:
    metrics = _get(guarded.url + "/metrics")[1].decode()
    sample = 'cadenza_beacons_total{kind="post",result="timeout"} '
    found = re.search(rf"^{re.escape(sample)}(\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_stalled_request_body_is_answered_408(guarded: Origin) -> None:
    counted = _timeouts_counted(guarded)
    raw, waited = _stalled_body(guarded)
    answer = parse_answer(raw)
    assert answer.status == 408, answer
    assert json.loads(answer.body)["error"] == "request_timeout"
    # The server waited for the body (a lower bound: load only adds time).
    assert waited > BODY_TIMEOUT_S - 0.5, waited
    assert _timeouts_counted(guarded) == counted + 1


@pytest.mark.stress
def test_a_stalled_request_body_is_answered_soon_after_body_timeout(guarded: Origin) -> None:
    raw, waited = _stalled_body(guarded)
    assert parse_answer(raw).status == 408
    assert waited < BODY_TIMEOUT_S + 2.0, waited


def test_connections_over_the_limit_are_refused_and_counted(
    slow_root: Path, tmp_path: Path
) -> None:
    limit = 20
    with serve(slow_root, tmp_path, max_connections=limit) as origin:
        wait_for(
            lambda: connections_held(origin.port) == 0,
            "the start-up health checks' connections are closed by the server",
        )
        held = [_connect(origin.port) for _ in range(limit)]
        try:
            # Accepted by the server, not only by the kernel: its accept queue is empty.
            wait_for(
                lambda: (
                    (row := listener(origin.port)) is not None
                    and row.receive_queue_bytes == 0
                    and connections_held(origin.port) == limit
                ),
                f"the server accepted the {limit} connections",
            )
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

        def healthy() -> bool:  # once the held connections' handlers have wound down
            with contextlib.suppress(OSError):
                return _get(origin.url + "/healthz")[0] == 200
            return False

        wait_for(healthy, "the origin answers again below its limit", poll_s=0.1)
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

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", origin.port), timeout=5).close()
            except ConnectionRefusedError:
                return True
            return False

        # The download is not read meanwhile, so it is still in flight (well within
        # send_timeout_s and shutdown_timeout_s, which a hang would reach first).
        wait_for(refused, "new connections refused after SIGTERM", timeout_s=20, poll_s=0.05)
        assert origin.process.poll() is None
        wait_for(lambda: _closed_by_peer(idle), "the idle connection closed", timeout_s=20)
        assert len(received) < size
        download.settimeout(30)  # a hang bound
        while len(received) < size:
            chunk = download.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        download.close()
        idle.close()
        assert len(received) == size
        assert bytes(received) == expected
        assert origin.process.wait(timeout=15) == 0
