"""Read-ahead and build priority of the just-in-time store: what a player reads next is
built in the background, only on an idle build thread, and a background build never
takes the place of one a player waits for."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from cadenza.origin.keys import CACHE
from cadenza.packager.jit.builder import BuildPool
from cadenza.packager.jit.events import BuildKind, CountingEvents
from cadenza.store.api import READ_PRIORITY, Provenance, ReadPriority
from cadenza.store.errors import BuildBusyError
from tests.conftest import MakeInput
from tests.origin.conftest import TRACK
from tests.origin.jit_fixtures import MakeJit, body_of, jit_store, make_jit, sources_with
from tests.origin.waiting import wait_for_async

__all__ = ["make_jit"]  # the fixture
pytestmark = pytest.mark.asyncio


@pytest.fixture
def source(make_input: MakeInput) -> Path:
    return make_input("flac", 44100, 2, 9.0, name=TRACK)  # three 4 s segments a rung


async def test_each_read_builds_what_the_player_reads_next(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    client = await make_jit(
        tmp_path / "root", sources_with(tmp_path / "src", source), jit_read_ahead=True
    )
    store = jit_store(client)
    builds = store.events.builds
    await body_of(client, f"/{TRACK}/aac-128k/playlist.m3u8")
    await store.drain()
    assert (builds.get(("init", "ok")), builds.get(("segment", "ok"))) == (1, 1)
    # The player's requests that follow find them made: nothing is built for them.
    await body_of(client, f"/{TRACK}/aac-128k/init.mp4")
    await body_of(client, f"/{TRACK}/aac-128k/seg-00001.m4s")
    cached = client.app[CACHE].peek(f"{TRACK}/aac-128k/seg-00001.m4s")
    assert cached is not None and cached.provenance is Provenance.JIT_STORED
    await store.drain()  # segment 1 read: segment 2 built ahead
    assert builds.get(("segment", "ok")) == 2
    await body_of(client, f"/{TRACK}/aac-128k/seg-00002.m4s")
    await store.drain()
    await body_of(client, f"/{TRACK}/aac-128k/seg-00003.m4s")
    await store.drain()  # the last segment: nothing after it
    assert builds.get(("segment", "ok")) == 3
    # Only the playlist was made for its read; every init and segment was made ahead.
    assert store.events.served_by == {"built": 1, "stored": 4}
    # Another rendition was never touched.
    assert client.app[CACHE].peek(f"{TRACK}/aac-256k/seg-00001.m4s") is None


async def test_read_ahead_is_off_when_configured_so(
    make_jit: MakeJit, source: Path, tmp_path: Path
) -> None:
    client = await make_jit(tmp_path / "root", sources_with(tmp_path / "src", source))
    store = jit_store(client)
    await body_of(client, f"/{TRACK}/aac-128k/seg-00001.m4s")
    await store.drain()
    assert store.events.builds.get(("segment", "ok")) == 1


async def _in_background(pool: BuildPool, key: str, value: str) -> tuple[str, bool]:
    READ_PRIORITY.set(ReadPriority.BACKGROUND)  # this task's reads only
    return await pool.run(key, BuildKind.SEGMENT, lambda: value)


async def test_a_background_build_needs_an_idle_thread_and_players_keep_theirs() -> None:
    events = CountingEvents()
    pool = BuildPool(2, 4, events)
    release, started = threading.Event(), threading.Event()

    def held() -> str:
        started.set()
        release.wait(30)
        return "held"

    player = asyncio.ensure_future(pool.run("a", BuildKind.SEGMENT, held))

    async def running() -> bool:
        return started.is_set()

    await wait_for_async(running, "the player's build started")
    # One of two threads busy: the other is kept for players, a background build is
    # refused at once (never queued ahead of a player's).
    with pytest.raises(BuildBusyError):
        await asyncio.ensure_future(_in_background(pool, "b", "ahead"))
    assert events.builds[("segment", "deferred")] == 1
    assert READ_PRIORITY.get() is ReadPriority.PLAYER  # the task's setting stayed there
    # A player's build still gets the idle thread.
    assert await pool.run("c", BuildKind.SEGMENT, lambda: "player") == ("player", True)
    # A background read of a key being built joins that build rather than being refused.
    joined = asyncio.ensure_future(_in_background(pool, "a", "never"))
    await asyncio.sleep(0)
    release.set()
    assert await player == ("held", True)
    assert await joined == ("held", False)
    # Idle again: the background build runs.
    assert await asyncio.ensure_future(_in_background(pool, "b", "ahead")) == ("ahead", True)
    await pool.close()
