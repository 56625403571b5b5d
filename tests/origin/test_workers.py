"""``cadenza serve --workers 2``: two processes share one port (SO_REUSEPORT),
``/metrics`` adds both up (prometheus-client multiprocess mode), a worker
killed with SIGKILL is logged and replaced, and a port that cannot be bound
is one line and exit status 2."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
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

from cadenza.origin.supervisor import (
    EXIT_CANNOT_LISTEN,
    EXIT_CRASH_LOOP,
    CrashLoop,
    RestartPolicy,
    Verdict,
    describe_exit,
    supervise,
)
from tests.fetch import fetch
from tests.origin.conftest import TRACK, free_port
from tests.origin.keepalive import keepalive_get

REQUESTS = 40
CADENZA = str(Path(sys.executable).with_name("cadenza"))
WAIT_S = 60.0  # the bound of every wait on a condition here (never a measured figure)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


@dataclass
class Workers:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, object]]:
        """The JSON lines written so far.  A line being written as the file is read
        (no newline yet), or torn by a worker killed in its write (it starts a JSON
        object and does not end one), is not a line yet: skipped.  Any other line
        that does not parse fails the test."""
        found = []
        text = self.log.read_text(errors="replace")
        for line in text[: text.rfind("\n") + 1].splitlines():
            if not line.startswith("{"):
                continue
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                if line.rstrip().endswith("}"):
                    raise
        return found

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first log message matching ``pattern``, waited for (bounded)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            for line in self.lines():
                match = re.search(pattern, str(line["message"]))
                if match:
                    return match
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"no log line matches {pattern!r}:\n{self.log.read_text()}")
            time.sleep(0.05)


@pytest.fixture
def two_workers(packaged_root: Path, tmp_path: Path) -> Iterator[Workers]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CADENZA, "serve", str(packaged_root), "--port", str(port), "--workers", "2",
             "--log-format", "json"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:  # bounded: the deadline, or the supervisor's exit
            try:
                _get(url + "/healthz")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text()) from None
                time.sleep(0.1)
        yield Workers(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def test_metrics_add_up_across_workers(two_workers: Workers) -> None:
    """Each worker adds its counter increments up once per event-loop turn
    (origin.metrics_batch), after the turn's answers are written: the other worker's
    last increment can land just after its answer arrived (a loaded machine showed
    39 of 40).  So the scrape is repeated until every request is counted (a bounded
    wait on the condition); a count above the requests fails at once."""
    for _ in range(REQUESTS):
        _get(f"{two_workers.url}/{TRACK}/aac-64k/seg-00001.m4s")
    pattern = r'^cadenza_requests_total\{cache="[^"]*",route="segment",status="200"\} (\S+)$'
    deadline = time.monotonic() + WAIT_S
    while True:
        text = _get(f"{two_workers.url}/metrics").decode()
        counted = sum(float(c) for c in re.findall(pattern, text, re.MULTILINE))
        assert counted <= REQUESTS, text
        if counted == REQUESTS or time.monotonic() > deadline:
            break
    assert counted == REQUESTS


def test_a_killed_worker_is_logged_and_replaced(two_workers: Workers) -> None:
    victim = int(two_workers.wait_for(r"^worker 0 started: pid (\d+)$").group(1))
    os.kill(victim, signal.SIGKILL)
    died = two_workers.wait_for(rf"^worker 0 \(pid {victim}\) killed by SIGKILL after ")
    assert "restarting it in" in died.string
    new_pid = int(two_workers.wait_for(r"^worker 0 restarted: pid (\d+)$").group(1))
    assert new_pid != victim
    # The port answers from the new worker: new connections, until one of them is
    # its (SO_REUSEPORT spreads them), seen in its access log line.
    deadline = time.monotonic() + WAIT_S
    while not any(
        line["logger"] == "cadenza.access" and line["pid"] == new_pid
        for line in two_workers.lines()
    ):
        assert time.monotonic() < deadline, two_workers.log.read_text()
        assert fetch(f"{two_workers.url}/healthz")[0] == 200
    assert two_workers.process.poll() is None


def test_no_version_in_server_on_either_transport(two_workers: Workers) -> None:
    path = f"/{TRACK}/aac-64k/seg-00002.m4s"
    port = int(two_workers.url.rsplit(":", 1)[1])
    # Until a worker answers it as a hot hit on the fast transport (each worker
    # loads it once; SO_REUSEPORT picks the worker).
    deadline = time.monotonic() + WAIT_S
    while (hit := keepalive_get(port, path)).field("X-Cadenza-Cache") != "hit":
        assert time.monotonic() < deadline
    full = fetch(f"{two_workers.url}/healthz")[1]
    missing = fetch(f"{two_workers.url}/{TRACK}/nothing/here.m4s")[1]
    assert {hit.field("Server"), full["Server"], missing["Server"]} == {"cadenza"}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_port_is_one_line_and_exit_2(packaged_root: Path, workers: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [CADENZA, "serve", str(packaged_root), "--port", str(port), "--workers", workers],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert lines == [f"cadenza serve: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert result.stdout == b""


def test_an_address_not_on_this_machine_is_one_line_and_exit_2(packaged_root: Path) -> None:
    result = subprocess.run(
        [CADENZA, "serve", str(packaged_root), "--host", "192.0.2.1", "--port", "8080"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("cadenza serve: cannot listen on 192.0.2.1:8080: ")


# -- the supervisor's decisions (pure) ---------------------------------------------


def test_restart_delay_doubles_and_is_capped() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=4.0)
    assert [policy.delay_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_crash_loop_is_given_up_and_a_stable_worker_resets_it() -> None:
    loop = CrashLoop(RestartPolicy(first_delay_s=1.0, stable_s=30.0, max_rapid_deaths=3))
    assert loop.on_death(lived_s=1.0, exitcode=1) == (Verdict.RESTART, 1.0)
    assert loop.on_death(lived_s=1.0, exitcode=-9) == (Verdict.RESTART, 2.0)
    assert loop.on_death(lived_s=3600.0, exitcode=-9) == (Verdict.RESTART, 1.0)  # was stable
    assert loop.on_death(lived_s=1.0, exitcode=1) == (Verdict.RESTART, 2.0)
    assert loop.on_death(lived_s=1.0, exitcode=1) == (Verdict.GIVE_UP, 0.0)


def test_a_worker_that_cannot_listen_is_not_restarted() -> None:
    loop = CrashLoop(RestartPolicy())
    assert loop.on_death(lived_s=0.1, exitcode=EXIT_CANNOT_LISTEN)[0] is Verdict.CANNOT_LISTEN


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"


def test_supervise_gives_up_on_workers_that_keep_dying(caplog: pytest.LogCaptureFixture) -> None:
    context = multiprocessing.get_context("spawn")
    started: list[int] = []

    def start_worker() -> multiprocessing.process.BaseProcess:
        worker = context.Process(target=sys.exit, args=(3,), daemon=True)
        worker.start()
        assert worker.pid is not None
        started.append(worker.pid)
        return worker

    policy = RestartPolicy(first_delay_s=0.01, max_delay_s=0.01, max_rapid_deaths=4)
    caplog.set_level("INFO", logger="cadenza.origin.supervisor")
    forgotten: list[int] = []
    code = supervise(start_worker, 1, policy=policy, on_death=forgotten.append)
    assert code == EXIT_CRASH_LOOP
    assert len(started) == 4  # restarted until the fourth death in a row
    assert forgotten == started
    messages = [r.getMessage() for r in caplog.records]
    assert sum("exited with code 3" in m for m in messages) == 4
    assert "giving up: 4 workers in a row died within 30 s of starting" in messages[-1]
