"""End-to-end fixtures: a packaged track, ``cadenza serve`` on one loopback port,
the harness page on another (so playback is cross-origin and CORS is real),
and a driver that runs one case in headless Chromium through playwright-core."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza.manifests.ladder import PRESETS
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import synthesize, write_audio
from tests.origin.originproc import cadenza_serve

ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = Path(__file__).resolve().parent / "page"
NODE_MODULES = ROOT / "node_modules"
DRIVER = Path(__file__).resolve().parent / "drive.mjs"
TRACK_S = 40.0
RESULTS_FILE = ROOT / ".e2e-results.json"

Drive = Callable[..., dict[str, Any]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="session")
def e2e_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40 s multi-codec track packaged with the default ladder."""
    folder = tmp_path_factory.mktemp("e2e")
    source = folder / "e2e-track.flac"
    write_audio(source, synthesize(TRACK_S, 44100, 2), 44100)
    out = folder / "out"
    out.mkdir()
    result = package_track(source, out, PackageOptions(ladder=PRESETS["music"]))
    assert result.status == "packaged", result.error
    return out


@pytest.fixture(scope="session")
def origin_url(e2e_packages: Path) -> Iterator[str]:
    # cwd: the demo page's players come from ROOT/node_modules
    with cadenza_serve(str(e2e_packages), e2e_packages.parent, cwd=ROOT) as origin:
        yield origin.url


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0]
        if clean.startswith("/lib/"):
            return str(NODE_MODULES / clean.removeprefix("/lib/"))
        return str(PAGE_DIR / clean.lstrip("/"))

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="session")
def page_url() -> Iterator[str]:
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.fail("node_modules is missing: run `make test` (it runs npm ci)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def merge_results(results: dict[str, Any]) -> None:
    """Add a module's cases to ``.e2e-results.json`` (each case by its name), keeping the
    cases other modules wrote there."""
    try:
        previous = json.loads(RESULTS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    merged = {**(previous if isinstance(previous, dict) else {}), **results}
    RESULTS_FILE.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")


def run_node_driver(driver: Path, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run a playwright-core driver script with ``config`` as its JSON argument; its last
    JSON line, which must say ``ok``."""
    node = shutil.which("node")
    assert node is not None, "node is required for the end-to-end suite"
    done = subprocess.run(
        [node, str(driver), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"driver printed nothing: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok"), result.get("error")
    return result


def _run_driver(default_page: str, **config: Any) -> dict[str, Any]:
    config = {"page": default_page, **config}  # a config's own "page" (the demo) wins
    return run_node_driver(DRIVER, config, float(config.get("timeout_s", 30)) + 60)


@pytest.fixture(scope="session")
def drive(page_url: str) -> Drive:
    return functools.partial(_run_driver, page_url)
