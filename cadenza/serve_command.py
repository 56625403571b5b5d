"""``cadenza serve ROOT [--sources DIR]``: the origin (:mod:`cadenza.origin.server`),
and with ``--sources`` (a folder or ``s3://bucket/prefix``) every source file there
served just in time as a track, whenever ROOT holds no packaged copy of it
(:mod:`cadenza.packager.jit`).

This module puts the two parts together, so neither imports the other: the origin
gains only the storage it reads from (``create_app(wrap_storage=...)``), the
just-in-time store (the store's read face, store errors) around the origin's own.
Without ``--sources`` the origin runs exactly as before, and PyAV is never loaded.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cadenza.origin import server
from cadenza.origin.errors import ObjectNotFoundError, StorageTimeoutError, StorageUnavailableError
from cadenza.origin.metrics_jit import JitEventSink
from cadenza.origin.settings import Settings
from cadenza.origin.storage import Storage, origin_error
from cadenza.packager.jit.config import (
    FIELDS,
    JitConfigError,
    JitOptions,
    flag_name,
    load_jit_options,
)
from cadenza.store.api import ObjectInfo, StoredObject
from cadenza.store.errors import (
    ObjectMissingError,
    StoreError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from cadenza.store.s3url import is_s3_url

if TYPE_CHECKING:
    from cadenza.packager.jit.store import JitStore

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    server.add_arguments(parser)
    group = parser.add_argument_group(
        "just-in-time serving", "also CADENZA_JIT_* variables and a [jit] table in --config"
    )
    for name, item in FIELDS.items():
        meaning = item.metadata["cadenza-jit"][0]
        group.add_argument(
            flag_name(name), dest=name, metavar="VALUE" if name != "sources" else "DIR",
            help=meaning.replace("`", "").replace("%", "%%"),
        )  # fmt: skip


class _StoreFace:
    """The origin's storage seen as the store's read face: origin errors back to the
    store errors they came from, which the just-in-time store understands."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.name = storage.name

    @staticmethod
    async def _call(key: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ObjectNotFoundError as exc:
            raise ObjectMissingError(key) from exc
        except StorageTimeoutError as exc:
            raise StoreTimeoutError(exc.backend, exc.detail) from exc
        except StorageUnavailableError as exc:
            raise StoreUnavailableError(exc.backend, exc.detail) from exc

    async def head(self, key: str) -> ObjectInfo:
        return await self._call(key, self._storage.head(key))

    async def read(self, key: str) -> StoredObject:
        return await self._call(key, self._storage.read(key))

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await self._call(key, self._storage.read_range(key, start, end))

    async def ping(self) -> None:
        await self._call("", self._storage.ping())

    async def list_tracks(self) -> list[str]:
        return await self._call("", self._storage.list_tracks())

    async def close(self) -> None:
        await self._storage.close()


class _OriginFace:
    """The just-in-time store with the origin's errors (``origin.storage.origin_error``:
    a full build queue is ``503``, an unusable source ``502``)."""

    def __init__(self, store: JitStore) -> None:
        self.store = store
        self.name = store.name

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except StoreError as exc:
            raise origin_error(exc, self.name) from exc

    async def head(self, key: str) -> ObjectInfo:
        return await self._call(self.store.head(key))

    async def read(self, key: str) -> StoredObject:
        return await self._call(self.store.read(key))

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await self._call(self.store.read_range(key, start, end))

    async def ping(self) -> None:
        await self._call(self.store.ping())

    async def list_tracks(self) -> list[str]:
        return await self._call(self.store.list_tracks())

    async def close(self) -> None:
        await self.store.close()

    def attach_events(self, events: JitEventSink) -> None:
        self.store.attach_events(events)


def wrap_jit(options: JitOptions, storage: Storage, settings: Settings) -> Storage:
    """The storage of ``cadenza serve --sources``: the just-in-time store around the
    origin's (module-level, and bound with ``functools.partial``, so it travels to
    spawned workers)."""
    from cadenza.packager.jit.assemble import build_jit_store  # PyAV: only with --sources

    store = build_jit_store(
        _StoreFace(storage),
        options,
        root=settings.root,
        s3_endpoint_url=settings.s3_endpoint_url,
        retry_after_s=settings.retry_after_s,
    )
    return _OriginFace(store)


def jit_options(args: argparse.Namespace, env: dict[str, str] | None = None) -> JitOptions:
    cli = {name: getattr(args, name, None) for name in FIELDS}
    return load_jit_options(cli, os.environ if env is None else env, args.config)


def run(args: argparse.Namespace) -> int:
    try:
        options = jit_options(args)
    except JitConfigError as exc:
        print(f"cadenza serve: {exc}", file=sys.stderr)
        return 2
    if not options.enabled:
        return server.run(args)
    if not is_s3_url(options.sources) and not Path(options.sources).is_dir():
        print(f"cadenza serve: --sources {options.sources} is not a directory", file=sys.stderr)
        return 2
    from cadenza.packager.errors import LadderError
    from cadenza.packager.ladder import load_ladder

    try:
        load_ladder(options.jit_ladder)
    except LadderError as exc:
        print(f"cadenza serve: --jit-ladder: {exc}", file=sys.stderr)
        return 2
    return server.run(args, wrap_storage=functools.partial(wrap_jit, options))
