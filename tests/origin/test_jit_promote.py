"""Promotion of a popular just-in-time track: packaged whole by the batch packager into
ROOT in the background (a niced child process), under a fresh version tag; then ROOT
answers its manifests, and every URL the just-in-time manifests published keeps
working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.origin.keys import CACHE
from cadenza.store.api import Provenance
from tests.conftest import MakeInput
from tests.origin.jit_fixtures import MakeJit, body_of, jit_store, make_jit, sources_with

__all__ = ["make_jit"]  # the fixture
pytestmark = pytest.mark.asyncio


async def test_a_popular_track_is_promoted_and_its_jit_urls_keep_working(
    make_jit: MakeJit, make_input: MakeInput, tmp_path: Path
) -> None:
    source = make_input("flac", 44100, 2, 9.0, name="popular")
    root, sources = tmp_path / "root", sources_with(tmp_path / "src", source)
    client = await make_jit(root, sources, jit_promote_after_requests=2)
    store = jit_store(client)
    jit_master = (await body_of(client, "/popular/master.m3u8")).decode()
    first = await body_of(client, "/popular/aac-128k/seg-00001.m4s")
    assert not (root / "popular").exists()
    await body_of(client, "/popular/aac-128k/init.mp4")  # an init segment is not counted
    assert store.promoter is not None and store.promoter.promoted == {}
    await body_of(client, "/popular/aac-128k/seg-00002.m4s")  # the second: promoted
    await store.promoter.idle()
    await store.drain()
    assert store.promoter.failed == {}
    tag = store.promoter.promoted["popular"]
    assert len(tag) == 8
    packaged = presentation_from_json((root / "popular" / "presentation.json").read_bytes())
    assert {r.name_tag for r in packaged.renditions} == {tag}
    lineage = json.loads((root / ".jit" / "popular" / "lineage.json").read_text())
    assert [b["tag"] for b in lineage["builds"]] == ["", tag]
    assert store.events.promotions == {"started": 1, "done": 1}

    # A fresh origin (nothing hot): ROOT answers the manifests now...
    again = await make_jit(root, sources, jit_promote_after_requests=2)
    master = (await body_of(again, "/popular/master.m3u8")).decode()
    assert master == (root / "popular" / "master.m3u8").read_text()
    assert master != jit_master and f"playlist-{tag}.m3u8" in master
    cached = again.app[CACHE].peek("popular/master.m3u8")
    assert cached is not None and cached.provenance is Provenance.STORED
    # ...and the just-in-time URLs keep working: written back, or built again.
    assert await body_of(again, "/popular/aac-128k/seg-00001.m4s") == first
    assert len(await body_of(again, "/popular/aac-128k/seg-00003.m4s")) > 0
    assert jit_store(again).events.builds.get(("segment", "ok")) == 1
    playlist = (await body_of(again, "/popular/aac-128k/playlist.m3u8")).decode()
    assert "seg-00001.m4s" in playlist  # the JIT build's own playlist, re-planned
    # No promoted URL equals a JIT one, and ROOT's URLs are its own files.
    promoted_segment = await body_of(again, f"/popular/aac-128k/seg-00001-{tag}.m4s")
    assert promoted_segment == (root / "popular" / "aac-128k" / f"seg-00001-{tag}.m4s").read_bytes()


async def test_promotion_is_off_at_zero(
    make_jit: MakeJit, make_input: MakeInput, tmp_path: Path
) -> None:
    source = make_input("flac", 44100, 2, 9.0, name="popular")
    client = await make_jit(
        tmp_path / "root", sources_with(tmp_path / "src", source), jit_promote_after_requests=0
    )
    for number in (1, 2, 3):
        await body_of(client, f"/popular/aac-128k/seg-0000{number}.m4s")
    assert jit_store(client).promoter is None
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [".jit"]
