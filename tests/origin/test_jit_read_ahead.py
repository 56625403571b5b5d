"""Read-ahead and build priority of the just-in-time store: what a player reads next is
built in the background, only on an idle build thread, and a background build never
takes the place of one a player waits for."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
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


async def _in_background(pool: BuildPool, key: str, build: Callable[[], str]) -> tuple[str, bool]:
    READ_PRIORITY.set(ReadPriority.BACKGROUND)  # this task's reads only
    return await pool.run(key, BuildKind.SEGMENT, build)


def _held(started: threading.Event, release: threading.Event, value: str) -> Callable[[], str]:
    def build() -> str:
        started.set()
        release.wait(30)
        return value

    return build


async def _until(event: threading.Event, what: str) -> None:
    async def happened() -> bool:
        return event.is_set()

    await wait_for_async(happened, what)


async def test_background_builds_have_their_own_lower_priority_thread() -> None:
    events = CountingEvents()
    pool = BuildPool(1, 0, events)
    player_started, player_release = threading.Event(), threading.Event()
    player = asyncio.ensure_future(
        pool.run("a", BuildKind.SEGMENT, _held(player_started, player_release, "player"))
    )
    await _until(player_started, "the player's build started")
    # The one player thread is busy and the queue is empty: a background build still
    # runs, on its own thread, niced.
    base = os.getpriority(os.PRIO_PROCESS, 0)

    def niceness() -> str:
        return str(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - base)

    assert await asyncio.ensure_future(_in_background(pool, "b", niceness)) == ("10", True)
    # While one background build runs, another is refused at once, never queued.
    ahead_started, ahead_release = threading.Event(), threading.Event()
    ahead = asyncio.ensure_future(
        _in_background(pool, "c", _held(ahead_started, ahead_release, "ahead"))
    )
    await _until(ahead_started, "the background build started")
    with pytest.raises(BuildBusyError):
        await asyncio.ensure_future(_in_background(pool, "d", lambda: "never"))
    assert events.builds[("segment", "deferred")] == 1
    assert READ_PRIORITY.get() is ReadPriority.PLAYER  # the tasks' setting stayed there
    # A player's read of the key being built in the background joins that build.
    joined = asyncio.ensure_future(pool.run("c", BuildKind.SEGMENT, lambda: "never"))
    await asyncio.sleep(0)
    ahead_release.set()
    player_release.set()
    assert await ahead == ("ahead", True)
    assert await joined == ("ahead", False)
    assert await player == ("player", True)
    await pool.close()


async def test_a_background_build_borrows_a_player_thread_only_while_another_stays_idle() -> None:
    events = CountingEvents()
    pool = BuildPool(2, 0, events)
    ahead_started, ahead_release = threading.Event(), threading.Event()
    ahead = asyncio.ensure_future(
        _in_background(pool, "a", _held(ahead_started, ahead_release, "ahead"))
    )
    await _until(ahead_started, "the background thread is building")
    # Its own thread busy, both player threads idle: it borrows one, one stays idle.
    borrowed_started, borrowed_release = threading.Event(), threading.Event()
    borrowed = asyncio.ensure_future(
        _in_background(pool, "b", _held(borrowed_started, borrowed_release, "borrowed"))
    )
    await _until(borrowed_started, "a player thread lent to a background build")
    assert pool.pending == 1
    # Now only one player thread is idle: it is kept for players.
    with pytest.raises(BuildBusyError):
        await asyncio.ensure_future(_in_background(pool, "c", lambda: "never"))
    assert events.builds[("segment", "deferred")] == 1
    assert await pool.run("d", BuildKind.SEGMENT, lambda: "player") == ("player", True)
    ahead_release.set()
    borrowed_release.set()
    assert await ahead == ("ahead", True)
    assert await borrowed == ("borrowed", True)
    await pool.close()
