"""``cadenza serve --workers 2``: two processes share one port (SO_REUSEPORT) and
``/metrics`` adds both up (prometheus-client multiprocess mode)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.origin.conftest import TRACK, free_port

REQUESTS = 40


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


@pytest.fixture
def two_workers(packaged_root: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("cadenza")), "serve", str(packaged_root),
         "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                _get(url + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def test_metrics_add_up_across_workers(two_workers: str) -> None:
    for _ in range(REQUESTS):
        _get(f"{two_workers}/{TRACK}/aac-64k/seg-00001.m4s")
    text = _get(f"{two_workers}/metrics").decode()
    pattern = r'^cadenza_requests_total\{cache="[^"]*",route="segment",status="200"\} (\S+)$'
    counts = re.findall(pattern, text, re.MULTILINE)
    assert sum(float(c) for c in counts) == REQUESTS
