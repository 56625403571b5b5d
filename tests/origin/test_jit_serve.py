"""``cadenza serve ROOT --sources DIR``: source files served as tracks just in time, by a
real origin over real files and real encoders (PyAV): the same URLs and heads as a
packaged track, one encode however many ask at once, write-back, the lineage that keeps
published URLs immutable, negative caching of a bad source, the track list, and the
metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from cadenza.origin.keys import CACHE
from cadenza.store.api import Provenance
from cadenza.store.errors import ObjectMissingError
from tests.conftest import MakeInput
from tests.origin.conftest import TRACK, MakeClient
from tests.origin.jit_fixtures import (
    MakeJit,
    body_of,
    jit_store,
    make_jit,
    sources_with,
    without_measured,
)

__all__ = ["make_jit"]  # the fixture
pytestmark = pytest.mark.asyncio

MANIFESTS = ("master.m3u8", "manifest.mpd")
SEGMENT = "aac-128k/seg-00001.m4s"
INIT = "aac-128k/init.mp4"


@pytest.fixture
def source(make_input: MakeInput) -> Path:
    """The very source the packaged track of ``packaged_root`` was made from."""
    return make_input("flac", 44100, 2, 9.0, name=TRACK)


async def test_a_jit_track_is_served_like_its_packaged_copy(
    make_jit: MakeJit, make_client: MakeClient, source: Path, tmp_path: Path
) -> None:
    """Same URLs, statuses and heads as the batch packager's track; the media playlists
    byte for byte, the master playlist and MPD except the measured fields."""
    jit = await make_jit(tmp_path / "root", sources_with(tmp_path / "src", source))
    packaged = await make_client()
    names = [*MANIFESTS]
    playlist = await packaged.get(f"/{TRACK}/master.m3u8")
    for line in (await playlist.text()).splitlines():
        if line and not line.startswith("#"):
            names.append(line)
    names += [INIT, SEGMENT, "aac-128k/seg-00003.m4s", "flac/init.mp4", "flac/seg-00002.m4s"]
    for name in names:
        mine = await jit.get(f"/{TRACK}/{name}")
        theirs = await packaged.get(f"/{TRACK}/{name}")
        assert mine.status == theirs.status == 200, name
        for header in ("Content-Type", "Cache-Control", "Access-Control-Allow-Origin"):
            assert mine.headers.get(header) == theirs.headers.get(header), (name, header)
        assert ("ETag" in mine.headers) and ("Last-Modified" in mine.headers), name
        if name.endswith((".m3u8", ".mpd")):
            ours, batch = (await mine.text()), (await theirs.text())
            if "/" in name:  # a media playlist: no measured field at all
                assert ours == batch, name
            else:
                assert without_measured(ours) == without_measured(batch), name
                # The estimate of the peak is a safe upper bound of the measured one.
                peaks = re.compile(r'(?:[^-]BANDWIDTH=| bandwidth=")([0-9]+)')
                estimated = [int(v) for v in peaks.findall(ours)]
                measured = [int(v) for v in peaks.findall(batch)]
                assert len(estimated) == len(measured) > 0
                assert all(e >= m for e, m in zip(estimated, measured, strict=True)), name
        else:
            assert len(await mine.read()) > 0


async def test_concurrent_requests_share_one_encode(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    client = await make_jit(tmp_path / "root", sources_with(tmp_path / "src", source))
    store = jit_store(client)
    await body_of(client, f"/{TRACK}/master.m3u8")  # planned once
    cache = client.app[CACHE]
    misses = cache.misses
    responses = await asyncio.gather(*(client.get(f"/{TRACK}/{SEGMENT}") for _ in range(12)))
    # The hot cache loaded it once: the other requests joined that load, or hit.
    assert cache.misses - misses == 1
    bodies = {await r.read() for r in responses}
    assert [r.status for r in responses] == [200] * 12
    assert len(bodies) == 1
    assert store.events.builds.get(("segment", "ok")) == 1
    assert store.events.builds.get(("manifest", "ok")) == 1
    # HEAD then GET of a cold segment: one encode too.
    head = await client.head(f"/{TRACK}/aac-128k/seg-00002.m4s")
    assert head.status == 200
    await body_of(client, f"/{TRACK}/aac-128k/seg-00002.m4s")
    assert store.events.builds.get(("segment", "ok")) == 2


async def test_built_segments_are_written_back_and_read_as_files_after_a_restart(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    root, sources = tmp_path / "root", sources_with(tmp_path / "src", source)
    first = await make_jit(root, sources)
    built = await body_of(first, f"/{TRACK}/{SEGMENT}")
    init = await body_of(first, f"/{TRACK}/{INIT}")
    assert first.app[CACHE].peek(f"{TRACK}/{SEGMENT}").provenance is Provenance.JIT_BUILT
    store = jit_store(first)
    await store.drain()
    [written] = (root / ".jit" / TRACK).glob(f"*/{SEGMENT}")
    assert written.read_bytes() == built
    lineage = json.loads((root / ".jit" / TRACK / "lineage.json").read_text())
    assert [b["tag"] for b in lineage["builds"]] == [""]

    again = await make_jit(root, sources)  # another process, or after a restart
    assert await body_of(again, f"/{TRACK}/{SEGMENT}") == built
    assert await body_of(again, f"/{TRACK}/{INIT}") == init
    cached = again.app[CACHE].peek(f"{TRACK}/{SEGMENT}")
    assert cached is not None and cached.provenance is Provenance.JIT_STORED
    events = jit_store(again).events
    assert events.builds.get(("segment", "ok"), 0) == 0
    assert events.served_by.get("stored") == 2
    # The ROOT's packaged tree holds nothing of it: the write-back area is hidden.
    assert sorted(p.name for p in root.iterdir()) == [".jit"]


async def test_a_corrupt_source_fails_with_its_name_and_is_not_probed_again(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "broken.flac").write_bytes(source.read_bytes()[:3000])  # truncated
    (sources / "noise.wav").write_bytes(b"RIFF" + os.urandom(4000))  # not audio at all
    client = await make_jit(tmp_path / "root", sources, jit_negative_ttl_s=3600)
    store = jit_store(client)
    for _ in range(3):
        response = await client.get("/broken/master.m3u8")
        assert response.status == 502
        body = await response.json()
        assert body["error"] == "bad_source"
        assert "broken.flac" in body["detail"]
        assert str(sources) not in body["detail"]  # never a server path
    assert store.planner.probes == 1
    assert store.events.negative_hits == 2
    assert store.events.builds[("manifest", "failed")] == 1  # a cached failure builds nothing
    segment = await client.get("/broken/aac-128k/seg-00001.m4s")
    assert segment.status == 502
    noise = await client.get("/noise/manifest.mpd")
    assert noise.status == 502
    assert "noise.wav" in (await noise.json())["detail"]
    assert store.planner.probes == 2


async def test_a_negative_entry_expires_after_its_ttl(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "broken.flac").write_bytes(source.read_bytes()[:3000])
    client = await make_jit(tmp_path / "root", sources, jit_negative_ttl_s=0)
    store = jit_store(client)
    for _ in range(2):
        assert (await client.get("/broken/master.m3u8")).status == 502
    assert store.planner.probes == 2  # a TTL of 0 caches nothing


async def test_a_replaced_source_gets_new_names_and_old_urls_keep_their_bytes(
    make_jit: MakeJit, make_input: MakeInput, source: Path, tmp_path: Path
) -> None:
    root, sources = tmp_path / "root", sources_with(tmp_path / "src", source)
    # Manifests revalidated on every request (TTL 0), so each one asks the store.
    client = await make_jit(root, sources, jit_listing_ttl_s=0, manifest_max_age_s=0)
    store = jit_store(client)
    first_master = (await body_of(client, f"/{TRACK}/master.m3u8")).decode()
    old_segment = await body_of(client, f"/{TRACK}/{SEGMENT}")
    old_playlist = await body_of(client, f"/{TRACK}/aac-128k/playlist.m3u8")
    await store.drain()
    assert "playlist.m3u8" in first_master

    other = make_input("flac", 48000, 2, 6.0)  # other bytes, same id
    (sources / source.name).write_bytes(other.read_bytes())
    master = (await body_of(client, f"/{TRACK}/master.m3u8")).decode()
    lineage = json.loads((root / ".jit" / TRACK / "lineage.json").read_text())
    tags = [b["tag"] for b in lineage["builds"]]
    assert tags[0] == "" and len(tags) == 2 and len(tags[1]) == 8
    assert f"playlist-{tags[1]}.m3u8" in master
    new_playlist = (await body_of(client, f"/{TRACK}/aac-128k/playlist-{tags[1]}.m3u8")).decode()
    assert f"seg-00001-{tags[1]}.m4s" in new_playlist
    new_segment = await body_of(client, f"/{TRACK}/aac-128k/seg-00001-{tags[1]}.m4s")
    assert new_segment != old_segment
    # The old URL keeps its old bytes (from the write-back area), never the new ones.
    assert await body_of(client, f"/{TRACK}/{SEGMENT}") == old_segment
    # A segment of the old build that was never written back cannot be made any more.
    gone = await client.get(f"/{TRACK}/aac-128k/seg-00002.m4s")
    assert gone.status == 404
    assert "earlier version of its source" in (await gone.json())["detail"]
    assert old_playlist  # (old playlists are not written back: re-planned from the source)
    # Changed back: the first build's names again, no third tag.
    (sources / source.name).write_bytes(source.read_bytes())
    assert "playlist.m3u8" in (await body_of(client, f"/{TRACK}/master.m3u8")).decode()
    lineage = json.loads((root / ".jit" / TRACK / "lineage.json").read_text())
    assert len(lineage["builds"]) == 2


async def test_sources_that_appear_and_disappear(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    client = await make_jit(tmp_path / "root", sources, jit_listing_ttl_s=0)
    assert (await client.get(f"/{TRACK}/master.m3u8")).status == 404
    tracks = await (await client.get("/v1/tracks")).json()
    assert tracks == {"tracks": []}
    (sources / source.name).write_bytes(source.read_bytes())
    (sources / "cover.jpg").write_bytes(b"not a source")
    assert (await client.get(f"/{TRACK}/master.m3u8")).status == 200
    tracks = await (await client.get("/v1/tracks")).json()
    assert tracks == {"tracks": [TRACK]}
    (sources / source.name).unlink()
    # The master is still hot (its TTL); the store itself says the track is gone.
    with pytest.raises(ObjectMissingError, match="source, which has changed or gone"):
        await jit_store(client).read(f"{TRACK}/aac-128k/playlist.m3u8")
    with pytest.raises(ObjectMissingError, match="does not exist"):
        await jit_store(client).read("nothing/master.m3u8")
    assert (await (await client.get("/v1/tracks")).json()) == {"tracks": []}


async def test_list_tracks_holds_packaged_and_jit_tracks(
    make_jit: MakeJit, packaged_root: Path, make_input: MakeInput, tmp_path: Path
) -> None:
    other = make_input("wav", 44100, 1, 2.0, name="Other Song!")
    client = await make_jit(packaged_root, sources_with(tmp_path / "src", other))
    tracks = await (await client.get("/v1/tracks")).json()
    assert tracks == {"tracks": ["OtherSong", TRACK]}


async def test_a_packaged_track_wins_over_its_source(
    make_jit: MakeJit, packaged_root: Path, source: Path, tmp_path: Path
) -> None:
    client = await make_jit(packaged_root, sources_with(tmp_path / "src", source))
    master = await body_of(client, f"/{TRACK}/master.m3u8")
    assert master == (packaged_root / TRACK / "master.m3u8").read_bytes()
    segment = await body_of(client, f"/{TRACK}/{SEGMENT}")
    assert segment == (packaged_root / TRACK / SEGMENT).read_bytes()
    store = jit_store(client)
    assert store.planner.probes == 0 and store.events.builds == {}
    # A name the packaged track does not have is not made up from the source.
    assert (await client.get(f"/{TRACK}/aac-128k/seg-00099.m4s")).status == 404


async def test_a_full_build_queue_answers_503_with_retry_after(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    client = await make_jit(
        tmp_path / "root",
        sources_with(tmp_path / "src", source),
        jit_workers=1,
        jit_queue_max=0,
        retry_after_s=7,
    )
    await body_of(client, f"/{TRACK}/master.m3u8")
    names = [f"/{TRACK}/aac-128k/seg-0000{n}.m4s" for n in (1, 2, 3)]
    responses = await asyncio.gather(*(client.get(n) for n in names))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 503, 503]
    busy = next(r for r in responses if r.status == 503)
    assert busy.headers["Retry-After"] == "7"
    assert (await busy.json())["error"] == "jit_busy"
    assert jit_store(client).events.builds[("segment", "busy")] == 2
    for name in names:  # and once the queue has room, they are built
        await body_of(client, name)


async def test_metrics_count_builds_and_how_jit_objects_were_answered(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    root, sources = tmp_path / "root", sources_with(tmp_path / "src", source)
    client = await make_jit(root, sources, fast_path=False)
    await body_of(client, f"/{TRACK}/{SEGMENT}")
    await body_of(client, f"/{TRACK}/{SEGMENT}")  # from the hot cache
    await jit_store(client).drain()
    restarted = await make_jit(root, sources, fast_path=False)
    await body_of(restarted, f"/{TRACK}/{SEGMENT}")  # read back
    text = await (await client.get("/metrics")).text()
    assert 'cadenza_jit_builds_total{kind="segment",outcome="ok"} 1.0' in text
    assert 'cadenza_jit_builds_total{kind="manifest",outcome="ok"} 1.0' in text
    assert 'cadenza_jit_requests_total{outcome="built"} 1.0' in text
    assert 'cadenza_jit_requests_total{outcome="hot"} 1.0' in text
    assert 'cadenza_jit_build_duration_seconds_count{kind="segment"} 1.0' in text
    assert "cadenza_jit_negative_cache_hits_total 0.0" in text
    assert 'cadenza_jit_promotions_total{outcome="done"} 0.0' in text
    assert "_created" not in text
    again = await (await restarted.get("/metrics")).text()
    assert 'cadenza_jit_requests_total{outcome="stored"} 1.0' in again
