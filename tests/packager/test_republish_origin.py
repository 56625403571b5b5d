"""A republished track as the origin serves it: the master playlist, media playlists,
MPD and the origin-decided group paths name only the new, version-tagged set, every
one of whose files answers; the old set still answers (for players holding an old
playlist) until ``cadenza gc``; an old group segment URL no longer resolves."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from aiohttp.test_utils import TestClient, TestServer

from cadenza.cli import main
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.origin.app import create_app
from cadenza.origin.settings import AbrDelivery, Settings
from tests.conftest import MakeInput

LADDER = '[[rung]]\ncodec = "aac"\nbitrate_kbps = 64\n[[rung]]\ncodec = "aac"\nbitrate_kbps = 128\n'


async def test_the_origin_serves_only_the_new_set_and_keeps_the_old_answering(
    make_input: MakeInput, tmp_path: Path
) -> None:
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER, encoding="utf-8")
    source = tmp_path / "song.flac"
    shutil.copyfile(make_input("flac", 44100, 2, 2.0), source)
    out = tmp_path / "out"
    args = ["package", str(source), "--out", str(out), "--ladder", str(ladder), "--jobs", "1"]
    assert main([*args, "--segment-duration", "1"]) == 0
    old = presentation_from_json((out / "song" / PRESENTATION_NAME).read_bytes())
    assert main([*args, "--segment-duration", "1", "--force"]) == 0
    new = presentation_from_json((out / "song" / PRESENTATION_NAME).read_bytes())
    [tag] = {r.name_tag for r in new.renditions}
    assert tag

    # The redirect (the default, adaptive, serves a session's start itself).
    settings = Settings(root=str(out), abr_delivery=AbrDelivery.REDIRECT)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        master = await (await client.get("/song/master.m3u8")).text()
        uris = [line for line in master.splitlines() if line and not line.startswith("#")]
        assert uris and all(u.endswith(f"playlist-{tag}.m3u8") for u in uris)
        for uri in uris:
            response = await client.get(f"/song/{uri}")
            assert response.status == 200, uri
            playlist = await response.text()
            names = re.findall(r'URI="([^"]+)"', playlist) + [
                line for line in playlist.splitlines() if line and not line.startswith("#")
            ]
            assert names and all(tag in name for name in names)
            folder = uri.rsplit("/", 1)[0]
            for name in names:
                media = await client.get(f"/song/{folder}/{name}")
                assert media.status == 200, name
                assert "immutable" in media.headers["Cache-Control"]
        mpd = await (await client.get("/song/manifest.mpd")).text()
        assert f'media="seg-$Number%05d$-{tag}.m4s"' in mpd
        assert "seg-$Number%05d$.m4s" not in mpd
        # The old set answers still: a player holding an old playlist plays on.
        top_old = old.renditions[-1]
        for name in (top_old.init_name, top_old.segment_name(top_old.segments[0])):
            assert (await client.get(f"/song/{top_old.id}/{name}")).status == 200
        # Origin-decided playback: the group template carries the tag, a tagged group
        # segment redirects to a tagged rung segment, an untagged (old) one is gone.
        decided = await (await client.get("/song/manifest.mpd?abr=origin&sid=s1")).text()
        assert f"seg-$Number%05d$-{tag}.m4s" in decided
        group = next(g for g in new.groups if g.switchable)
        path = f"/song/{group.folder}/seg-00001-{tag}.m4s?sid=s1"
        redirect = await client.get(path, allow_redirects=False)
        assert redirect.status == 302, await redirect.text()
        target = urljoin(path, redirect.headers["Location"])
        assert target.endswith(f"/seg-00001-{tag}.m4s")
        assert (await client.get(target)).status == 200
        stale = await client.get(f"/song/{group.folder}/seg-00001.m4s?sid=s1")
        assert stale.status == 404
    finally:
        await client.close()
