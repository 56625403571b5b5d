"""The demo player page and its libraries (served from the npm folder)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from aiohttp import web

from cadenza.origin.errors import ObjectNotFoundError
from cadenza.origin.keys import SETTINGS

log = logging.getLogger("cadenza.origin")


STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
# The demo page's player libraries, served from the npm folder (never from the internet).
PLAYER_LIBS: Final = {
    "hls.min.js": "hls.js/dist/hls.min.js",
    "dash.all.min.js": "dashjs/dist/modern/umd/dash.all.min.js",
    "shaka-player.compiled.js": "shaka-player/dist/shaka-player.compiled.js",
}


async def handle_root(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/player/"})


async def handle_player_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "player.html"
    if name not in ("player.html", "player.js"):
        raise ObjectNotFoundError(f"no such player file {name}")
    return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


async def handle_player_lib(request: web.Request) -> web.StreamResponse:
    relative = PLAYER_LIBS.get(request.match_info["name"])
    if relative is None:
        raise ObjectNotFoundError("unknown player library")
    path = Path(request.app[SETTINGS].player_assets_dir) / relative
    if not path.is_file():
        # The path goes to the log only: an answer never names the server's files.
        log.warning("player library %s is missing: run `npm ci` (make demo does)", path)
        raise ObjectNotFoundError(
            f"player library {request.match_info['name']} is not installed on this origin"
        )
    return web.FileResponse(
        path,
        headers={
            "Cache-Control": "public, max-age=3600",
            "Content-Type": "text/javascript; charset=utf-8",
        },
    )
