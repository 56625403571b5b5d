"""The demo player page and its libraries (hls.js, dash.js, Shaka Player).

The libraries are the npm packages pinned in package.json / package-lock.json, never
fetched from the internet.  Where they come from (``player_assets_dir``):

- empty (the default): the copies built into the installed package (``setup.py`` puts
  them into the wheel when it is built from a checkout where ``npm ci`` ran: the image,
  ``pip install .``), else the ``node_modules`` folder of the checkout this code runs
  from (an editable install, ``make demo``), whatever the working folder;
- a folder: an npm ``node_modules`` folder, and only that.

When one is missing, the log says so once at startup and the page shows which are
missing and how to get them; the origin itself is unaffected.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from cadenza.origin.errors import ObjectNotFoundError
from cadenza.origin.keys import SETTINGS
from cadenza.origin.settings import Settings

log = logging.getLogger("cadenza.origin")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
# Where setup.py puts the libraries in a wheel; the manifest both read.
VENDORED_DIR: Final = STATIC_DIR / "players"
MANIFEST: Final = STATIC_DIR / "players.json"
# The checkout's npm folder: this file is <checkout>/origin/player.py.
CHECKOUT_NODE_MODULES: Final = Path(__file__).resolve().parents[1] / "node_modules"
HOW_TO_GET: Final = (
    "run `npm ci` in the source checkout (`make demo` does), install a wheel built from a "
    "checkout where it ran, or set CADENZA_PLAYER_ASSETS_DIR to an npm node_modules folder"
)


@dataclass(frozen=True, slots=True)
class PlayerLib:
    """One player library: the name the page asks for, and its file in its npm package."""

    name: str
    package: str
    file: str
    license: str

    @property
    def npm_path(self) -> str:
        return f"{self.package}/{self.file}"


def _read_manifest() -> dict[str, PlayerLib]:
    entries = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return {name: PlayerLib(name, **entry) for name, entry in entries.items()}


PLAYER_LIBS: Final = _read_manifest()


def candidates(lib: PlayerLib, assets_dir: str) -> list[Path]:
    """Where ``lib`` is looked for, in order."""
    if assets_dir:
        return [Path(assets_dir) / lib.npm_path]
    return [VENDORED_DIR / lib.name, CHECKOUT_NODE_MODULES / lib.npm_path]


def find_lib(lib: PlayerLib, assets_dir: str) -> Path | None:
    return next((p for p in candidates(lib, assets_dir) if p.is_file()), None)


def missing_libs(settings: Settings) -> list[PlayerLib]:
    return [
        lib for lib in PLAYER_LIBS.values() if find_lib(lib, settings.player_assets_dir) is None
    ]


def describe_missing(missing: list[PlayerLib], assets_dir: str) -> str:
    """One line for the log: which are missing, where they were looked for, what to do."""
    looked = sorted({str(p.parent) for lib in missing for p in candidates(lib, assets_dir)})
    names = ", ".join(f"{lib.name} (npm {lib.package})" for lib in missing)
    return (
        f"demo player page: {names} not found (looked in {', '.join(looked)}); the page "
        f"at /player/ cannot play until they are there: {HOW_TO_GET}"
    )


async def check_player_libs(app: web.Application) -> None:
    """On startup: say once, in the log, what the demo page lacks."""
    missing = missing_libs(app[SETTINGS])
    if missing:
        log.warning("%s", describe_missing(missing, app[SETTINGS].player_assets_dir))


def _banner(missing: list[PlayerLib]) -> str:
    """The page's notice (no server paths in it: the log has those)."""
    items = "".join(
        f"<li><code>{html.escape(lib.name)}</code> from npm <code>{html.escape(lib.package)}"
        "</code></li>"
        for lib in missing
    )
    return (
        '<div id="missing-players" role="alert" style="background:#5a1d1d;padding:12px 22px">'
        "<strong>This origin has no copy of these player libraries, so the players "
        f"below cannot start:</strong><ul>{items}</ul>To get them: "
        f"{html.escape(HOW_TO_GET)}, then restart the origin.</div>"
    )


async def handle_root(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/player/"})


async def handle_player_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "player.html"
    if name not in ("player.html", "player.js"):
        raise ObjectNotFoundError(f"no such player file {name}")
    missing = missing_libs(request.app[SETTINGS]) if name == "player.html" else []
    if not missing:
        return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})
    page = (STATIC_DIR / name).read_text(encoding="utf-8")
    page = page.replace("<body>", "<body>\n" + _banner(missing), 1)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def handle_player_lib(request: web.Request) -> web.StreamResponse:
    lib = PLAYER_LIBS.get(request.match_info["name"])
    if lib is None:
        raise ObjectNotFoundError("unknown player library")
    path = find_lib(lib, request.app[SETTINGS].player_assets_dir)
    if path is None:
        # Said once at startup (check_player_libs); an answer never names the server's files.
        raise ObjectNotFoundError(
            f"player library {lib.name} is not installed on this origin: {HOW_TO_GET}"
        )
    return web.FileResponse(
        path,
        headers={
            "Cache-Control": "public, max-age=3600",
            "Content-Type": "text/javascript; charset=utf-8",
        },
    )
