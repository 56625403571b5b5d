"""``cadenza serve`` as a subprocess on a free loopback port, for the load and
storage-fault tests: the real server (its runner, site, limits and process),
its pid (for RSS) and its port (to count its connections).

Every wait here is bounded; the process is stopped with SIGTERM (then SIGKILL)
on the way out of :func:`cadenza_serve`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.http_bench import free_port  # not conftest: `make bench` imports this without pytest

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
TCP_ESTABLISHED = "01"


@dataclass(frozen=True, slots=True)
class OriginProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        """VmRSS of the server process, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.process.pid}")

    def established(self) -> int:
        """Established TCP connections on the server's port, from /proc/net/tcp: an
        estimate while connections come and go (the table is read a page at a time)."""
        return established_on(self.port)

    def socket_fds(self) -> int:
        """Sockets the server process holds open: its listener and asyncio's self-pipe,
        plus one per connection.  Exact at any moment, unlike :meth:`established`."""
        count = 0
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed since the listing
                if os.readlink(fd).startswith("socket:"):
                    count += 1
        return count

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def established_on(port: int) -> int:
    """ESTABLISHED sockets whose local port is ``port`` (server ends of loopback
    connections), read from /proc/net/tcp and tcp6."""
    wanted = f"{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                established = len(fields) > 3 and fields[3] == TCP_ESTABLISHED
                if established and fields[1].rsplit(":", 1)[1] == wanted:
                    count += 1
    return count


def raise_open_files_limit() -> int:
    """The soft RLIMIT_NOFILE up to the hard limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def cadenza_serve(
    root: str,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    config: Path | None = None,
    cwd: Path | None = None,
    **settings: object,
) -> Iterator[OriginProcess]:
    """``cadenza serve ROOT`` (one worker) with ``CADENZA_*`` settings, extra
    environment and an optional ``--config`` TOML, on ``port`` (a free one by
    default); yields once ``/healthz`` answers."""
    port = free_port() if port is None else port
    environment = {
        **os.environ,
        **(env or {}),
        **{f"CADENZA_{name.upper()}": str(value) for name, value in settings.items()},
    }
    log = log_dir / f"origin-{port}.log"
    with log.open("wb") as sink:
        argv = [str(Path(sys.executable).with_name("cadenza")), "serve", root, "--port", str(port)]
        if config is not None:
            argv += ["--config", str(config)]
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    origin = OriginProcess(process, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(origin.url):  # bounded: the deadline, or the process's exit
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cadenza serve did not start:\n{origin.log_tail()}")
            time.sleep(0.1)
        yield origin
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout_s``; reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
