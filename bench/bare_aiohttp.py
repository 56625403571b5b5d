"""The framework's ceiling: bare aiohttp answering every GET with one file's bytes.

``python -m bench.bare_aiohttp FILE HOST PORT`` serves FILE from memory at every
path, with the headers a CDN needs (type, length, ETag, Cache-Control) and no
middleware, routing, cache or metrics. ``make bench`` runs it beside
``cadenza serve`` so the table shows how much of the gap to nginx is aiohttp's
own cost and how much is cadenza's.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from aiohttp import web


def create_app(body: bytes) -> web.Application:
    headers = {
        "Content-Type": "audio/mp4",
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        "Accept-Ranges": "bytes",
    }

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{path:.*}", handle)
    return app


def main() -> None:
    file, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    web.run_app(
        create_app(Path(file).read_bytes()), host=host, port=port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
