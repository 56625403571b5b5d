"""Prefetch over just-in-time tracks (``cadenza serve ROOT --sources DIR``): the
next track of a stated queue is built before the session gets there, so its
first segment is a hot-cache hit; and the time to first byte is split by where
the answer came from (``jit``, ``prefetched``, ``plain``)."""

from __future__ import annotations

from pathlib import Path

from cadenza.origin.keys import CACHE
from cadenza.store.api import Provenance
from tests.conftest import MakeInput
from tests.origin.jit_fixtures import MakeJit, make_jit, sources_with
from tests.origin.prefetch_helpers import RUNG, get, metric, segment, settled

__all__ = ["make_jit"]  # the fixture

FIRST_BYTE = "cadenza_first_byte_seconds_count"


async def test_a_queued_jit_track_starts_hot(
    make_jit: MakeJit, make_input: MakeInput, tmp_path: Path
) -> None:
    sources = sources_with(
        tmp_path / "src",
        make_input("flac", 44100, 2, 9.0, name="first"),
        make_input("flac", 44100, 2, 9.0, name="second"),
    )
    client = await make_jit(tmp_path / "root", sources)
    queued = await client.post("/v1/sessions/s1/queue", json={"tracks": ["first", "second"]})
    assert queued.status == 200
    app = client.app
    assert app is not None
    built = await get(client, segment("first", 1), "s1")
    assert built.headers["X-Cadenza-Cache"] == "miss"
    cached = app[CACHE].peek(f"first/{RUNG}/seg-00001.m4s")
    assert cached is not None and cached.provenance is not Provenance.STORED
    # jit: storage says it built the object for this request; else plain.
    source = "jit" if cached.provenance is Provenance.JIT_BUILT else "plain"
    assert await metric(client, FIRST_BYTE, source=source) == 1
    await get(client, segment("first", 2), "s1")  # the half of a three-segment track
    await settled(client)
    for path in (f"/second/{RUNG}/init.mp4", segment("second", 1), segment("second", 2)):
        answer = await get(client, path, "s1")
        assert answer.status == 200
        assert answer.headers["X-Cadenza-Cache"] == "hit", path
    assert await metric(client, FIRST_BYTE, source="prefetched") == 3
    assert await metric(client, "cadenza_prefetch_used_total") == 3
    # Built for prefetch: no packaged copy of the track exists.
    warmed = app[CACHE].peek(f"second/{RUNG}/seg-00001.m4s")
    assert warmed is not None and warmed.provenance is not Provenance.STORED
