"""The origin's HTTP benchmark: ``cadenza serve`` against nginx serving the same files.

One 60 s track is packaged once; both servers then serve the package folder on
loopback and ``wrk -t2 -c64 --latency`` measures requests per second and the
99th percentile latency.  Each server is warmed once (a 2 s wrk run, and one
request per URL so the origin's hot cache holds every object), then the
series of one phase alternate in a rotating order, ``runs`` times each, and
the medians are reported.

Run standalone: ``.venv/bin/python -m bench.http_bench`` (runs=3, 5 s each).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.common import Row, median

HOST = "127.0.0.1"
WRK = "wrk"
NGINX = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"
CONNECTIONS = 64
THREADS = 2
WARMUP_S = 2.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
TRACK_NAME = "bench"
TRACK_DURATION_S = 60.0
RATE_HZ = 44_100
# The synthetic track is cleaner than a recording, so its FLAC compresses to ~200 KB per
# 4 s; a -70 dBFS noise floor (like a real recording's) brings a segment near 300 KB.
NOISE_FLOOR = 0.0003
AAC_TARGET_BYTES = 64 * 1024
FLAC_TARGET_BYTES = 300 * 1024
SESSION_SID = "bench"
# Both servers log every request to a file (what operators run), or neither does:
# CADENZA_BENCH_ACCESS_LOGS=off.
ACCESS_LOGS = os.environ.get("CADENZA_BENCH_ACCESS_LOGS", "on") != "off"
CMCD_SID = "bench-cmcd"


def log(message: str) -> None:
    print(f"[http_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- packaging


@dataclass(frozen=True, slots=True)
class Package:
    root: Path
    track: str
    aac_segment: Path  # the aac-128k segment nearest 64 KB
    flac_segment: Path  # the flac segment nearest 300 KB

    def path_of(self, file: Path) -> str:
        return "/" + file.relative_to(self.root).as_posix()


def _cadenza_bin() -> Path:
    return Path(sys.executable).parent / "cadenza"


def _nearest_segment(folder: Path, target_bytes: int) -> Path:
    segments = sorted(folder.glob("seg-*.m4s"))
    if not segments:
        raise RuntimeError(f"no segments in {folder}")
    return min(segments, key=lambda seg: abs(seg.stat().st_size - target_bytes))


def package_track(work_dir: Path) -> Package:
    """Synthesise a 60 s 44.1 kHz stereo FLAC and package it into ``work_dir/root``."""
    source = work_dir / f"{TRACK_NAME}.flac"
    root = work_dir / "root"
    # Imported here so that the bench runner stays small (see package_bench.make_track).
    import numpy as np

    from samples.make_sample import synthesize, write_audio

    samples = synthesize(TRACK_DURATION_S, RATE_HZ)
    rng = np.random.default_rng(11)
    samples = (samples + NOISE_FLOOR * rng.standard_normal(samples.shape)).astype(np.float32)
    write_audio(source, samples, RATE_HZ)
    started = time.perf_counter()
    done = subprocess.run(
        [str(_cadenza_bin()), "package", str(source), "--out", str(root)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cadenza package exited {done.returncode}: {done.stderr[-2000:]}")
    log(f"packaged {source.name} in {time.perf_counter() - started:.1f} s")
    tracks = sorted(p.parent for p in root.glob("*/master.m3u8"))
    if len(tracks) != 1:
        raise RuntimeError(f"expected one packaged track in {root}, found {tracks}")
    track_dir = tracks[0]
    for name in ("aac-128k", "flac"):
        if not (track_dir / name).is_dir():
            found = sorted(p.name for p in track_dir.iterdir())
            raise RuntimeError(f"no {name} rendition in {track_dir}: {found}")
    aac = _nearest_segment(track_dir / "aac-128k", AAC_TARGET_BYTES)
    flac = _nearest_segment(track_dir / "flac", FLAC_TARGET_BYTES)
    log(f"AAC 128k segment {aac.relative_to(root)}: {aac.stat().st_size} bytes")
    log(f"FLAC segment {flac.relative_to(root)}: {flac.stat().st_size} bytes")
    return Package(root, track_dir.name, aac, flac)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM the process group we created for ``process``, then SIGKILL what is left."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{name} ignored SIGTERM; killing it")
    # The group may outlive its leader (cadenza's spawned workers): always sweep it.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=STOP_TIMEOUT_S)


def _listening_sockets(port: int) -> int:
    """How many TCP sockets listen on HOST:port (one per worker with SO_REUSEPORT)."""
    local = f"{socket.inet_aton(HOST)[::-1].hex().upper()}:{port:04X}"
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[1] == local and fields[3] == "0A":
                count += 1
    return count


def _wait_ready(
    process: subprocess.Popen[bytes], name: str, url: str, log_file: Path, sockets: int
) -> None:
    """Bounded wait until ``url`` answers 200 and ``sockets`` listeners are bound."""
    port = int(url.split(":")[2].split("/")[0])
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited {process.returncode} on start: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                ok = response.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        if ok and _listening_sockets(port) >= sockets:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready at {url} after {START_TIMEOUT_S:.0f} s")


@contextmanager
def cadenza_server(
    root: Path, workers: int, work_dir: Path, binary: Path | None = None
) -> Iterator[str]:
    """``cadenza serve`` (this checkout's, or ``binary``) on a free loopback port; yields
    its base URL."""
    port = free_port()
    log_file = work_dir / f"cadenza-{workers}w-{port}.log"
    command = binary or _cadenza_bin()
    argv = [str(command), "serve", str(root), "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers)]
    # Its access lines go to stderr: the log file.
    env = {**os.environ, "CADENZA_ACCESS_LOG": "true" if ACCESS_LOGS else "false"}
    with open(log_file, "wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        base = f"http://{HOST}:{port}"
        _wait_ready(process, "cadenza", f"{base}/healthz", log_file, workers)
        log(f"cadenza serve, {workers} worker(s), at {base}")
        yield base
    finally:
        _stop(process, "cadenza")


@contextmanager
def bare_aiohttp_server(file: Path, work_dir: Path) -> Iterator[str]:
    """``bench.bare_aiohttp`` serving ``file`` at every path; yields its base URL."""
    port = free_port()
    log_file = work_dir / "bare-aiohttp.log"
    argv = [sys.executable, "-m", "bench.bare_aiohttp", str(file), HOST, str(port)]
    with open(log_file, "wb") as sink:
        process = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    try:
        base = f"http://{HOST}:{port}"
        _wait_ready(process, "bare aiohttp", f"{base}/ready", log_file, 1)
        log(f"bare aiohttp at {base}")
        yield base
    finally:
        _stop(process, "bare aiohttp")


NGINX_CONF = """\
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    default_type application/octet-stream;
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_min_uses 1;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location / {{
        }}
    }}
}}
"""


@contextmanager
def nginx_server(root: Path, workers: int, work_dir: Path) -> Iterator[str]:
    """nginx serving ``root`` as static files (sendfile) on a free loopback port."""
    port = free_port()
    prefix = work_dir / f"nginx-{workers}w"
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",
            workers=workers,
            prefix=prefix,
            host=HOST,
            port=port,
            root=root,
            access_log=prefix / "access.log" if ACCESS_LOGS else "off",
        ),
        encoding="utf-8",
    )
    log_file = prefix / "stderr.log"
    argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    argv += ["-g", "daemon off;"]
    with open(log_file, "wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://{HOST}:{port}"
        master = sorted(root.glob("*/master.m3u8"))[0]
        url = f"{base}/{master.relative_to(root).as_posix()}"
        _wait_ready(process, "nginx", url, log_file, 1)
        log(f"nginx, {workers} worker(s), at {base}")
        yield base
    finally:
        _stop(process, "nginx")


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    p99_ms: float
    socket_errors: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_P99 = re.compile(r"^\s*99(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
)


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec and the 99 % latency (in ms) from ``wrk --latency`` output."""
    rps = _RPS.search(output)
    p99 = _P99.search(output)
    if rps is None or p99 is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    if non_2xx is not None and int(non_2xx.group(1)) > 0:
        raise RuntimeError(f"wrk saw {non_2xx.group(1)} error responses:\n{output}")
    socket_errors = _SOCKET.search(output)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * _UNIT_MS[p99.group(2)], errors)


def wrk(url: str, duration_s: float) -> WrkResult:
    argv = [WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s:g}s", "--latency", url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-2000:]}")
    result = parse_wrk(done.stdout)
    if result.socket_errors:
        log(f"wrk reported {result.socket_errors} socket errors on {url}")
    return result


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """One GET (it checks the URL, fills the origin's hot cache, or creates a session)."""
    with urllib.request.urlopen(url, timeout=10.0) as response:
        return response.status, dict(response.headers.items()), response.read()


def expect_ok(url: str, size: int | None = None, header: str | None = None) -> dict[str, str]:
    status, headers, body = fetch(url)
    if status != 200:
        raise RuntimeError(f"GET {url}: status {status}")
    if size is not None and len(body) != size:
        raise RuntimeError(f"GET {url}: {len(body)} bytes, expected {size}")
    if header is not None and header not in headers:
        raise RuntimeError(f"GET {url}: no {header} header in {sorted(headers)}")
    return headers


@dataclass(slots=True)
class Series:
    """One (server, URL) pair measured ``runs`` times."""

    label: str
    url: str
    results: list[WrkResult]

    @property
    def rps(self) -> float:
        return median([r.requests_per_s for r in self.results])

    @property
    def p99_ms(self) -> float:
        return median([r.p99_ms for r in self.results])

    def summary(self) -> dict[str, float | str]:
        return {
            "rps_runs": ", ".join(f"{r.requests_per_s:.0f}" for r in self.results),
            "p99_ms_runs": ", ".join(f"{r.p99_ms:.2f}" for r in self.results),
            "socket_errors": float(sum(r.socket_errors for r in self.results)),
        }


def measure(pairs: Sequence[tuple[str, str]], runs: int, duration_s: float) -> list[Series]:
    """Every (label, URL) ``runs`` times, rotating which goes first in each round."""
    series = [Series(label, url, []) for label, url in pairs]
    for index in range(runs):
        shift = index % len(series)
        for item in series[shift:] + series[:shift]:
            result = wrk(item.url, duration_s)
            item.results.append(result)
            log(
                f"  run {index + 1}/{runs} {item.label}: {result.requests_per_s:.0f} req/s, "
                f"p99 {result.p99_ms:.2f} ms"
            )
    return series


def warm(urls: Sequence[str]) -> None:
    for url in urls:
        wrk(url, WARMUP_S)


# --------------------------------------------------------------------------- rows


def _report(row: Row) -> Row:
    verdict = {True: "met", False: "NOT met", None: "n/a"}[row.met]
    log(
        f"{row.work}: {row.cadenza:.1f} vs {row.peer} {row.peer_value:.1f} {row.metric} "
        f"(ratio {row.ratio:.2f}; goal {row.goal}: {verdict})"
    )
    return row


def _req_row(
    work: str,
    peer: str,
    goal: str,
    ours: Series,
    theirs: Series,
    runs: int,
    met: bool | None,
    **extra: float | str,
) -> Row:
    """A req/s row: both sides' medians, p99s and per-run figures in ``extra``."""
    details: dict[str, float | str] = {
        "cadenza_p99_ms": round(ours.p99_ms, 3),
        "peer_p99_ms": round(theirs.p99_ms, 3),
        "url_path": "/" + ours.url.split("/", 3)[3],
        **extra,
    }
    details.update({f"cadenza_{k}": v for k, v in ours.summary().items()})
    details.update({f"peer_{k}": v for k, v in theirs.summary().items()})
    return _report(
        Row(
            work=work,
            peer=peer,
            metric="req/s",
            cadenza=round(ours.rps, 1),
            peer_value=round(theirs.rps, 1),
            goal=goal,
            met=met,
            higher_is_better=True,
            runs=runs,
            extra=details,
        )
    )


def _vs_nginx(
    work: str,
    peer: str,
    goal: str,
    ours: Series,
    theirs: Series,
    runs: int,
    min_ratio: float,
    max_p99_ratio: float | None,
    size: int,
) -> Row:
    ratio_ok = ours.rps >= min_ratio * theirs.rps
    p99_ok = max_p99_ratio is None or ours.p99_ms <= max_p99_ratio * theirs.p99_ms
    met = ratio_ok and p99_ok
    return _req_row(work, peer, goal, ours, theirs, runs, met, segment_bytes=float(size))


def _cmcd_query(track: str) -> str:
    # A player's request CMCD (keys in the spec's order; su=?0 is omitted, as false is).
    cmcd = f'bl=21300,br=128,cid="{track}",d=4000,mtp=25400,ot=a,sf=h,sid="{CMCD_SID}",st=v,v=1'
    return "CMCD=" + quote(cmcd, safe="")


def one_worker_phase(package: Package, work_dir: Path, runs: int, duration_s: float) -> list[Row]:
    aac_path = package.path_of(package.aac_segment)
    aac_size = package.aac_segment.stat().st_size
    master_path = f"/{package.track}/master.m3u8"
    with (
        cadenza_server(package.root, 1, work_dir) as origin,
        nginx_server(package.root, 1, work_dir) as nginx,
        bare_aiohttp_server(package.aac_segment, work_dir) as bare,
    ):
        seg_url = origin + aac_path
        nginx_url = nginx + aac_path
        bare_url = bare + aac_path
        cmcd_url = f"{seg_url}?{_cmcd_query(package.track)}"
        sid_url = f"{origin}{master_path}?sid={SESSION_SID}"
        static_url = origin + master_path
        expect_ok(seg_url, aac_size)
        expect_ok(nginx_url, aac_size)
        expect_ok(bare_url, aac_size)
        # The sid's session must exist before its master playlist is steered.
        create = f"{origin}/{package.track}/aac-128k/seg-00001.m4s?CMCD=" + quote(
            f'sid="{SESSION_SID}",mtp=2000,br=128,ot=a,d=4000', safe=""
        )
        expect_ok(create, header="CMSD-Static")
        steered = expect_ok(sid_url)
        if "private" not in steered.get("Cache-Control", ""):
            raise RuntimeError(f"{sid_url} was not steered: {steered}")
        expect_ok(static_url)
        expect_ok(cmcd_url, aac_size)
        expect_ok(cmcd_url, aac_size, header="CMSD-Dynamic")
        log("warming up (1 worker)")
        warm([seg_url, nginx_url, bare_url])
        log("measuring (1 worker)")
        seg, peer, cmcd, sid, static, framework = measure(
            [
                ("cadenza 64 KB", seg_url),
                ("nginx 64 KB", nginx_url),
                ("cadenza 64 KB + CMCD", cmcd_url),
                ("cadenza master ?sid=", sid_url),
                ("cadenza static master", static_url),
                ("bare aiohttp 64 KB", bare_url),
            ],
            runs,
            duration_s,
        )
    rows = [
        _vs_nginx(
            "64 KB segment, hot cache, wrk -c64, 1 worker",
            "nginx sendfile, 1 worker",
            ">= 0.3x req/s; p99 <= 3x",
            seg,
            peer,
            runs,
            0.3,
            3.0,
            aac_size,
        )
    ]
    rows.append(
        _req_row(
            "64 KB segment, hot cache, wrk -c64, 1 worker: against the framework",
            "bare aiohttp returning the same bytes (bench/bare_aiohttp.py)",
            "none set (the aiohttp ceiling that origin/fastpath.py goes around)",
            seg,
            framework,
            runs,
            None,
            nginx_ratio=round(framework.rps / peer.rps, 3) if peer.rps else 0.0,
        )
    )
    rows.append(
        _req_row(
            "per-session master playlist (?sid=), wrk -c64",
            "the same server returning static bytes (master.m3u8 without sid)",
            ">= 0.85x; p99 <= 20 ms",
            sid,
            static,
            runs,
            sid.rps >= 0.85 * static.rps and sid.p99_ms <= 20.0,
        )
    )
    rows.append(
        _req_row(
            "CMCD parsing + session update per request",
            "the same segment without CMCD",
            "<= 10 % overhead",
            cmcd,
            seg,
            runs,
            cmcd.rps >= 0.9 * seg.rps,
            overhead_pct=round(100.0 * (1.0 - cmcd.rps / seg.rps), 2) if seg.rps else 0.0,
            segment_bytes=float(aac_size),
        )
    )
    return rows


def two_worker_phase(package: Package, work_dir: Path, runs: int, duration_s: float) -> list[Row]:
    aac_path = package.path_of(package.aac_segment)
    flac_path = package.path_of(package.flac_segment)
    aac_size = package.aac_segment.stat().st_size
    flac_size = package.flac_segment.stat().st_size
    with (
        cadenza_server(package.root, 2, work_dir) as origin,
        nginx_server(package.root, 2, work_dir) as nginx,
    ):
        for base in (origin, nginx):
            expect_ok(base + aac_path, aac_size)
        log("warming up (2 workers)")
        warm([origin + aac_path, nginx + aac_path])
        # Each worker has its own hot cache: fill both with the FLAC segment too.
        for _ in range(8):
            expect_ok(origin + flac_path, flac_size)
            expect_ok(nginx + flac_path, flac_size)
        log("measuring (2 workers)")
        seg, peer, flac, flac_peer = measure(
            [
                ("cadenza 64 KB", origin + aac_path),
                ("nginx 64 KB", nginx + aac_path),
                ("cadenza FLAC", origin + flac_path),
                ("nginx FLAC", nginx + flac_path),
            ],
            runs,
            duration_s,
        )
    return [
        _vs_nginx(
            "64 KB segment, hot cache, wrk -c64, 2 workers",
            "nginx sendfile, 2 workers",
            ">= 0.5x req/s; p99 <= 3x",
            seg,
            peer,
            runs,
            0.5,
            3.0,
            aac_size,
        ),
        _vs_nginx(
            "300 KB FLAC segment, wrk -c64, 2 workers",
            "nginx sendfile, 2 workers",
            ">= 0.5x",
            flac,
            flac_peer,
            runs,
            0.5,
            None,
            flac_size,
        ),
    ]


def run(work_dir: Path, runs: int = 5, duration_s: float = 8.0) -> list[Row]:
    """Package a track, then measure the origin against nginx (see the module docstring)."""
    if runs < 1 or duration_s <= 0:
        raise ValueError("runs must be >= 1 and duration_s > 0")
    work_dir.mkdir(parents=True, exist_ok=True)
    package = package_track(work_dir)
    rows = one_worker_phase(package, work_dir, runs, duration_s)
    rows += two_worker_phase(package, work_dir, runs, duration_s)
    return rows


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cadenza-http-bench-") as tmp:
        rows = run(Path(tmp), runs=3, duration_s=5.0)
    for row in rows:
        print(json.dumps(row.to_dict()))
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
