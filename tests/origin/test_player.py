"""The demo page's player libraries: found whatever the working folder, and when they are
missing, the page and the log say which and how to get them.

(The wheel that carries them is tests/deploy/test_image.py's.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cadenza.origin.player import CHECKOUT_NODE_MODULES, PLAYER_LIBS, STATIC_DIR
from tests.origin.conftest import MakeClient

ROOT = Path(__file__).resolve().parents[2]


def test_the_manifest_names_the_pinned_npm_packages() -> None:
    pinned = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))["dependencies"]
    assert {lib.package for lib in PLAYER_LIBS.values()} <= set(pinned)
    page = (STATIC_DIR / "player.html").read_text(encoding="utf-8")
    for name in PLAYER_LIBS:
        assert f'src="/player/lib/{name}"' in page


async def test_players_are_served_from_any_working_folder(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CHECKOUT_NODE_MODULES == ROOT / "node_modules"
    monkeypatch.chdir(tmp_path)  # no node_modules here: the old default looked only here
    client = await make_client()
    for lib in PLAYER_LIBS.values():
        response = await client.get(f"/player/lib/{lib.name}")
        assert response.status == 200, lib.name
        assert await response.read() == (ROOT / "node_modules" / lib.npm_path).read_bytes()
        assert response.headers["Content-Type"].startswith("text/javascript")
    page = await (await client.get("/player/")).text()
    assert "missing-players" not in page


async def test_an_explicit_npm_folder_is_the_only_place_looked(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(player_assets_dir=str(ROOT / "node_modules"))
    assert (await client.get("/player/lib/hls.min.js")).status == 200
    other = await make_client(player_assets_dir=str(tmp_path))
    assert (await other.get("/player/lib/hls.min.js")).status == 404


async def test_missing_players_are_named_on_the_page_and_in_the_log(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "node_modules"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="cadenza.origin"):
        client = await make_client(player_assets_dir=str(empty))
    (line,) = [r.getMessage() for r in caplog.records if "demo player page" in r.getMessage()]
    for lib in PLAYER_LIBS.values():
        assert lib.name in line and f"npm {lib.package}" in line
    assert str(empty) in line and "npm ci" in line and "CADENZA_PLAYER_ASSETS_DIR" in line

    response = await client.get("/player/")
    assert response.status == 200
    page = await response.text()
    assert page.index('id="missing-players"') < page.index("<header>")
    for lib in PLAYER_LIBS.values():
        assert f"<code>{lib.name}</code>" in page
    assert "npm ci" in page
    assert str(tmp_path) not in page, "the page never names the server's folders"

    library = await client.get("/player/lib/dash.all.min.js")
    assert library.status == 404
    assert "npm ci" in (await library.json())["detail"]


async def test_one_missing_player_is_named_alone(make_client: MakeClient, tmp_path: Path) -> None:
    folder = tmp_path / "node_modules"
    for lib in PLAYER_LIBS.values():
        if lib.package != "dashjs":
            target = folder / lib.npm_path
            target.parent.mkdir(parents=True)
            target.write_bytes(b"// stand-in")
    page = await (await (await make_client(player_assets_dir=str(folder))).get("/player/")).text()
    assert "<code>dash.all.min.js</code>" in page
    assert "<code>hls.min.js</code>" not in page
