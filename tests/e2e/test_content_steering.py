"""Content steering in real players: two nginx "CDNs" in front of one origin,
hls.js and dash.js start on pathway A (manifest fetched through edge A), edge A
is taken down mid-playback, and the players must move to pathway B and keep
playing.  The origin's health probes mark A down within about a second and its
steering server (TTL 2 s) ranks B first."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import ROOT, Drive, free_port
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve

pytestmark = pytest.mark.e2e
TRACK = "e2e-track"
TTL_S = 2
NOTIFY_AT_S = 3.0
PLAY_S = 20.0


@dataclass
class Stack:
    origin: str
    edge_a: NginxEdge
    edge_b: NginxEdge


def _config(origin_port: int, port_a: int, port_b: int) -> str:
    return f"""
content_steering_url = "http://127.0.0.1:{origin_port}"
content_steering_ttl_s = {TTL_S}
# dash.js then asks before its first segment and every TTL after; without it, its first
# request waits for its PLAYBACK_STARTED, which the harness's early audio.play() pre-empts.
content_steering_query_before_start = true
pathway_health_interval_s = 0.5
pathway_health_timeout_s = 0.5
pathway_health_failures = 2
pathway_recover_hold_s = 1.0
manifest_max_age_s = 1

[[pathways]]
id = "cdn-a"
base_url = "http://127.0.0.1:{port_a}"

[[pathways]]
id = "cdn-b"
base_url = "http://127.0.0.1:{port_b}"
"""


@pytest.fixture
def stack(e2e_packages: Path, tmp_path: Path) -> Iterator[Stack]:
    """``cadenza serve`` with two pathways, each an nginx edge in front of it."""
    origin_port, port_a, port_b = free_port(), free_port(), free_port()
    config = tmp_path / "cadenza.toml"
    config.write_text(_config(origin_port, port_a, port_b), encoding="utf-8")
    origin_hostport = f"127.0.0.1:{origin_port}"
    edges = [
        NginxEdge(tmp_path / "edge-a", origin_hostport, port_a),
        NginxEdge(tmp_path / "edge-b", origin_hostport, port_b),
    ]
    with cadenza_serve(str(e2e_packages), tmp_path, port=origin_port, config=config, cwd=ROOT):
        try:
            for edge in edges:
                edge.start()
            _wait_for(lambda: all(p["up"] and p["probes"] for p in _pathways(origin_hostport)), 10)
            yield Stack(f"http://{origin_hostport}", edges[0], edges[1])
        finally:
            for edge in edges:
                edge.stop()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _pathways(origin_hostport: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = _get_json(f"http://{origin_hostport}/v1/pathways")["pathways"]
    return rows


def _wait_for(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s")


def _segment_hits(result: dict[str, Any], stack: Stack) -> list[tuple[float, str, int | None]]:
    """(wall time, pathway, status) of every media segment request, in order."""
    ports = {stack.edge_a.port: "cdn-a", stack.edge_b.port: "cdn-b"}
    hits = []
    for entry in result["requests"]:
        parts = urlsplit(entry["url"])
        if parts.port in ports and parts.path.endswith((".m4s", ".mp4")):
            hits.append((entry["wall"], ports[parts.port], entry["status"]))
    return sorted(hits)


def _drive_and_kill_a(drive: Drive, stack: Stack, manifest: str, player: str, tmp: Path) -> Any:
    """Play through edge A; once ``currentTime`` passes NOTIFY_AT_S, stop edge A."""
    cue = tmp / f"cue-{player}.json"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = drive(
                player=player,
                src=f"{stack.edge_a.url}/{TRACK}/{manifest}",
                play_s=PLAY_S,
                buffer_s=6,
                record_requests=True,
                notify={"at_s": NOTIFY_AT_S, "file": str(cue)},
                timeout_s=60,
            )
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 45
    while not cue.exists() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.time()
    stack.edge_a.stop()
    outcome["stopped_at"] = time.time()
    thread.join(timeout=150)
    assert not thread.is_alive(), "the driver did not finish"
    if "error" in outcome:
        raise outcome["error"]
    assert cue.exists(), "playback never reached the cue"
    return outcome["result"], killed_at, outcome["stopped_at"]


CASES = [("hls", "master.m3u8?codec=aac"), ("dash", "manifest.mpd?codec=aac")]


@pytest.mark.parametrize(("player", "manifest"), CASES, ids=[p for p, _ in CASES])
def test_player_moves_to_the_other_pathway_when_a_cdn_goes_down(
    drive: Drive, stack: Stack, player: str, manifest: str, tmp_path: Path
) -> None:
    result, killed_at, stopped_at = _drive_and_kill_a(drive, stack, manifest, player, tmp_path)
    final = result["final"]
    hits = _segment_hits(result, stack)
    before = [h for h in hits if h[0] < killed_at]
    # Responses edge A sent while it shut down may be reported a moment later.
    after_ok = [h for h in hits if h[0] >= stopped_at + 0.5 and h[2] in (200, 206)]

    # Started on the default pathway: every segment before the cut came through edge A.
    assert before, "no segment was requested before edge A went down"
    assert {pathway for _, pathway, _ in before} == {"cdn-a"}, before

    # Moved to B and stayed there: every segment served after the cut came through B.
    assert after_ok, f"no segment served after edge A went down: {hits[-10:]}"
    assert {pathway for _, pathway, _ in after_ok} == {"cdn-b"}, after_ok
    switch_s = next(h[0] for h in hits if h[0] >= killed_at and h[1] == "cdn-b") - killed_at

    # Kept playing, with no fatal error, well past the cut.  The only errors allowed are
    # segments that failed on edge A (dash.js reports them once its retries are spent).
    assert final["fatal"] is None, final["errors"]
    assert all(f"127.0.0.1:{stack.edge_a.port}/" in e for e in final["errors"]), final["errors"]
    notified = result["notified"]["current_time"]
    assert final["current_time"] >= PLAY_S
    assert final["current_time"] - notified >= PLAY_S - NOTIFY_AT_S - 1

    # The origin saw A go down, and the steering server now ranks B first.
    pathways = {p["id"]: p for p in _pathways(urlsplit(stack.origin).netloc)}
    assert pathways["cdn-a"]["up"] is False
    assert pathways["cdn-b"]["up"] is True
    steering = _get_json(f"{stack.origin}/v1/steering/{TRACK}?_HLS_pathway=cdn-a")
    assert steering["PATHWAY-PRIORITY"] == ["cdn-b", "cdn-a"]

    # The player itself loaded steering manifests, and one after the cut put B first.
    loaded = final["steering"]
    asked = [r["url"] for r in result["requests"] if "/v1/steering/" in r["url"]]
    assert loaded, f"the player never loaded a steering manifest; asked {asked}"
    after_cut = [s for s in loaded if s["wall"] >= killed_at]
    assert any(s["priority"] and s["priority"][0] == "cdn-b" for s in after_cut), loaded
    first_b = next(s["wall"] for s in after_cut if s["priority"] and s["priority"][0] == "cdn-b")
    if player == "hls":
        assert final["pathway"] == "cdn-b"

    failed_a = [h for h in hits if h[0] >= killed_at and h[1] == "cdn-a"]
    print(
        f"\n{player}: before the cut {len(before)} segments on cdn-a; first cdn-b segment "
        f"{switch_s:.2f} s after the cut, steering put cdn-b first after "
        f"{first_b - killed_at:.2f} s; {len(after_ok)} segments on cdn-b, "
        f"{len(failed_a)} failed on cdn-a; currentTime {notified:.1f} -> "
        f"{final['current_time']:.1f} s; errors {final['errors']}"
    )
