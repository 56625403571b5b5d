"""A CDN edge for tests: Debian's nginx running the template we ship
(deploy/nginx/edge.conf.template) in front of a ``cadenza serve`` on loopback.

Several can run at once (each in its own prefix folder), which is what the
content steering tests need: two "CDNs" in front of one origin, one of which
the test takes down."""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "nginx" / "edge.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render_edge_config(prefix: Path, origin: str, listen: str) -> str:
    """The template with its ``${...}`` placeholders filled (nginx's own
    ``$variables`` stay), as ``nginxinc/nginx-unprivileged``'s entrypoint fills them."""
    config = string.Template(TEMPLATE.read_text(encoding="utf-8")).safe_substitute(
        USER_DIRECTIVE="user root;" if os.geteuid() == 0 else "",
        PREFIX=str(prefix),
        ORIGIN=origin,
        LISTEN=listen,
    )
    if "${" in config:
        raise AssertionError("unfilled placeholder in the edge template")
    return config


class NginxEdge:
    """One nginx edge on ``127.0.0.1:port`` proxying to ``origin`` (host:port)."""

    def __init__(self, prefix: Path, origin: str, port: int) -> None:
        self.prefix = prefix
        self.origin = origin
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        config = self.prefix / "nginx.conf"
        config.write_text(
            render_edge_config(self.prefix, self.origin, f"127.0.0.1:{self.port}"),
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while True:  # bounded: the deadline, or nginx's exit
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # nginx answers (the origin may not be up yet): started
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.prefix / "error.log"
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"nginx on port {self.port} did not start:\n{text}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown: open connections are closed), then wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
