"""hls.js and dash.js play just-in-time tracks from their very first request: ``cadenza
serve ROOT`` with an empty ROOT and ``CADENZA_JIT_SOURCES`` naming a folder of source
files, behind the nginx edge we ship, cross-origin, in headless Chromium.  Each player
gets a track nobody asked for before, so every manifest and segment it plays is built
on request."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from samples.make_sample import synthesize, write_audio
from tests.e2e.conftest import ROOT, Drive, free_port, merge_results
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve

pytestmark = pytest.mark.e2e
TRACK_S = 24.0
PLAY_S = 8.0
PLAYERS = {"hls": "master.m3u8?codec=aac", "dash": "manifest.mpd?codec=aac"}
RESULTS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True, slots=True)
class JitServed:
    origin: str
    edge: str
    root: Path


@pytest.fixture(scope="module")
def jit_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JitServed]:
    folder = tmp_path_factory.mktemp("e2e-jit")
    sources = folder / "sources"
    sources.mkdir()
    for player in PLAYERS:
        write_audio(sources / f"jit-{player}.flac", synthesize(TRACK_S, 44100, 2), 44100)
    root = folder / "root"
    root.mkdir()
    with cadenza_serve(str(root), folder, cwd=ROOT, jit_sources=str(sources)) as origin:
        edge = NginxEdge(folder / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield JitServed(origin.url, edge.url, root)
        finally:
            edge.stop()
    merge_results(RESULTS)


def _metric(origin: str, line_start: str) -> float:
    with urllib.request.urlopen(f"{origin}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(line_start)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, line_start
    return float(match.group(1))


@pytest.mark.parametrize("player", list(PLAYERS))
def test_a_player_plays_a_jit_track_from_its_first_request(
    drive: Drive, jit_served: JitServed, player: str
) -> None:
    track = f"jit-{player}"
    assert not (jit_served.root / ".jit" / track).exists()  # nothing built yet
    built_before = _metric(
        jit_served.origin, 'cadenza_jit_builds_total{kind="segment",outcome="ok"}'
    )
    result = drive(
        player=player,
        src=f"{jit_served.edge}/{track}/{PLAYERS[player]}",
        play_s=PLAY_S,
        timeout_s=60,
    )
    final = result["final"]
    RESULTS[f"{player} jit via edge"] = {
        "startup_s": final["startup_s"],
        "current_time": final["current_time"],
        "errors": final["errors"],
        "rms_max": final["rms_max"],
    }
    assert final["fatal"] is None, final["errors"]
    assert final["current_time"] >= PLAY_S
    assert len(final["buffered"]) == 1, f"holes in the buffer: {final['buffered']}"
    assert final["rms_max"] > 0.01  # sound, not silence
    built = _metric(jit_served.origin, 'cadenza_jit_builds_total{kind="segment",outcome="ok"}')
    assert built - built_before >= 2  # its segments were encoded on request
    assert list((jit_served.root / ".jit" / track).glob("*/*/seg-*.m4s"))  # and written back
