"""The track model every decided segment reads (origin.rendering.presentation_of):
taken from the hot cache without a load while its copy is fresh, parsed once
per version of presentation.json, and counted as the hot-cache hit it is."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from cadenza.manifests.jsonio import presentation_to_json
from cadenza.manifests.model import PRESENTATION_NAME
from cadenza.origin.app import create_app
from cadenza.origin.cache import HotCache
from cadenza.origin.keys import CACHE, METRICS
from cadenza.origin.rendering import presentation_of
from cadenza.origin.settings import Settings
from tests.origin.conftest import TRACK


class Clock:
    """The hot cache's clock; it starts at the monotonic clock that stamps
    what the cache loads (cache.build_cached)."""

    def __init__(self) -> None:
        self.now_s = time.monotonic()

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def app_clock(
    packaged_root: Path, tmp_path: Path
) -> AsyncIterator[tuple[web.Application, Clock]]:
    root = tmp_path / "root"
    shutil.copytree(packaged_root / TRACK, root / TRACK)
    settings = Settings(root=str(root), manifest_max_age_s=5)
    app = create_app(settings)
    clock = Clock()
    app[CACHE] = HotCache(
        settings.cache_max_bytes, settings.cache_max_object_bytes, 5.0, clock=clock
    )
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app, clock
    finally:
        await runner.cleanup()


def _hits(app: web.Application) -> float:
    app[METRICS].batch.flush()  # as a scrape does: this loop turn's increments
    value = app[METRICS].registry.get_sample_value(
        "cadenza_hot_cache_lookups_total", {"result": "hit"}
    )
    return value or 0.0


async def test_the_model_follows_a_changed_presentation(
    app_clock: tuple[web.Application, Clock], tmp_path: Path
) -> None:
    app, clock = app_clock
    first, source = await presentation_of(app, TRACK)
    hits = _hits(app)
    again, same_source = await presentation_of(app, TRACK)
    assert again is first and same_source is source  # parsed once
    assert _hits(app) == hits + 1  # a hit, counted as load_object counts one
    assert app[CACHE].hits >= 1

    changed = dataclasses.replace(first, metadata=(("title", "changed"),))
    path = tmp_path / "root" / TRACK / PRESENTATION_NAME
    path.write_text(presentation_to_json(changed), encoding="utf-8")
    clock.now_s += 4.0  # within the manifest TTL: the cached copy still answers
    still, _ = await presentation_of(app, TRACK)
    assert still is first
    clock.now_s += 2.0  # past it: reloaded, and the new version parsed
    new, new_source = await presentation_of(app, TRACK)
    assert new == changed and new is not first
    assert new_source.etag != source.etag
    newest, _ = await presentation_of(app, TRACK)
    assert newest is new
