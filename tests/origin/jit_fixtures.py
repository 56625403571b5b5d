"""Helpers of the just-in-time serving tests: a real origin (aiohttp test server) whose
storage is the just-in-time store, as ``cadenza serve ROOT --sources DIR`` builds it."""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cadenza.origin.app import create_app
from cadenza.origin.keys import STORAGE
from cadenza.origin.settings import Settings
from cadenza.packager.jit.config import JitOptions
from cadenza.packager.jit.store import JitStore
from cadenza.serve_command import wrap_jit

MakeJit = Callable[..., Any]


def jit_store(client: TestClient[Any, Any]) -> JitStore:
    """The just-in-time store behind a client's origin."""
    store: JitStore = client.app[STORAGE].store
    return store


def sources_with(folder: Path, *files: Path) -> Path:
    """A sources folder holding copies of ``files``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return folder


@pytest.fixture
async def make_jit() -> AsyncIterator[MakeJit]:
    """``await make_jit(root, sources, **jit_options)`` -> a started TestClient; its
    origin is closed (builds and write-backs finished) at the end of the test."""
    clients: list[TestClient[Any, Any]] = []

    async def make(root: Path | str, sources: str | Path, **options: Any) -> TestClient[Any, Any]:
        if isinstance(root, Path):
            root.mkdir(parents=True, exist_ok=True)
        # Off unless a test asks: read-ahead builds on its own, and most tests count builds.
        options.setdefault("jit_read_ahead", False)
        settings_fields = {k: options.pop(k) for k in list(options) if not k.startswith("jit_")}
        jit = JitOptions(sources=str(sources), **options)
        settings = Settings(root=str(root), **settings_fields)
        app = create_app(settings, wrap_storage=functools.partial(wrap_jit, jit))
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


_MEASURED_HLS = re.compile(r"(AVERAGE-BANDWIDTH|BANDWIDTH)=[0-9]+")
_LOUDNESS_HLS = re.compile(r"#EXT-X-SESSION-DATA:DATA-ID=\"com\.cadenza\.loudness[^\n]*\n")
_MEASURED_MPD = re.compile(r' bandwidth="[0-9]+"')
_LOUDNESS_MPD = re.compile(r"\s*<SupplementalProperty[^>]*loudness[^>]*/>")


def without_measured(text: str) -> str:
    """A manifest with the fields the batch packager measures (bitrates, loudness)
    blanked, so a just-in-time manifest can be compared with a packaged one."""
    text = _LOUDNESS_HLS.sub("", text)
    text = _MEASURED_HLS.sub(r"\1=*", text)
    text = _LOUDNESS_MPD.sub("", text)
    return _MEASURED_MPD.sub(' bandwidth="*"', text)


async def body_of(client: TestClient[Any, Any], path: str) -> bytes:
    response = await client.get(path)
    assert response.status == 200, (path, response.status, await response.text())
    return await response.read()
