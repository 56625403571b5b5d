"""The local backend: both faces over one folder, and the same definition of a
complete track as S3's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cadenza.origin.errors import ObjectNotFoundError, StorageUnavailableError
from cadenza.origin.storage import LocalStorage
from cadenza.store.api import TrackReader, TrackWriter
from cadenza.store.atomic import TMP_PREFIX
from cadenza.store.errors import ObjectMissingError, StoreUnavailableError
from cadenza.store.local import LocalStore, folder_is_complete

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "presentation.json"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = {
        "whole/aac-64k/seg-00001.m4s": b"\x00\x00\x00\x08moof",
        "whole/presentation.json": GOLDEN.read_bytes(),
        "damaged/presentation.json": b'{"track_id": ',
        "bare/aac-64k/seg-00001.m4s": b"",
        f"{TMP_PREFIX}busy-{os.getpid()}-0123abcd/presentation.json": GOLDEN.read_bytes(),
    }
    for key, body in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(body)
    (tmp_path / "loose.txt").write_text("not a track")
    return tmp_path


async def test_only_complete_tracks_are_listed(root: Path) -> None:
    store = LocalStore(root)
    reader: TrackReader = store  # both faces, checked by mypy
    writer: TrackWriter = store
    assert reader.name == "local" and writer.location("t").endswith("/t")
    assert await store.list_tracks() == ["whole"]
    assert store.complete(["whole", "damaged", "bare", "absent"]) == {"whole"}
    assert folder_is_complete(root / "whole") and not folder_is_complete(root / "damaged")
    assert await LocalStore(root / "absent").list_tracks() == []


async def test_reads_and_validators(root: Path) -> None:
    store = LocalStore(root)
    info = await store.head("whole/aac-64k/seg-00001.m4s")
    assert info.size_bytes == 8
    stat = (root / "whole/aac-64k/seg-00001.m4s").stat()
    assert info.etag_hint == f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
    assert (await store.read("whole/aac-64k/seg-00001.m4s")).body == b"\x00\x00\x00\x08moof"
    assert await store.read_range("whole/aac-64k/seg-00001.m4s", 4, 7) == b"moof"
    handle, opened = await store.open("whole/aac-64k/seg-00001.m4s")
    with handle:
        assert handle.read() == b"\x00\x00\x00\x08moof"
    assert opened == info


@pytest.mark.parametrize("key", ["absent.m4s", "whole", "../outside", "x" * 300])
async def test_missing_names_are_missing_objects(root: Path, key: str) -> None:
    with pytest.raises(ObjectMissingError):
        await LocalStore(root).head(key)


async def test_a_symlink_out_of_the_root_is_not_followed(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret"
    outside.write_text("secret")
    (root / "whole" / "link").symlink_to(outside)
    with pytest.raises(ObjectMissingError):
        await LocalStore(root).read("whole/link")


async def test_the_origin_adapter_maps_store_errors(root: Path) -> None:
    storage = LocalStorage(root)
    with pytest.raises(ObjectNotFoundError) as missing:
        await storage.read("absent.m4s")
    assert missing.value.status == 404
    assert missing.value.detail == "absent.m4s does not exist"
    assert await storage.list_tracks() == ["whole"]
    file_root = root / "loose.txt"
    with pytest.raises(StoreUnavailableError):
        await LocalStore(file_root).ping()
    with pytest.raises(StorageUnavailableError) as down:
        await LocalStorage(file_root).ping()
    assert down.value.status == 503
    assert down.value.backend == "local"
    assert str(file_root) not in down.value.detail  # answers never carry server paths


def test_write_face_puts_and_deletes_whole_tracks(root: Path) -> None:
    store = LocalStore(root)
    work = store.new_working_folder("fresh")
    (work / "presentation.json").write_bytes(GOLDEN.read_bytes())
    assert store.complete(["fresh"]) == set()  # not in place yet
    assert store.put_track(work, "fresh") == 0
    assert store.complete(["fresh"]) == {"fresh"}
    assert store.location("fresh") == str(root.resolve() / "fresh")
    store.delete_track("fresh")
    store.delete_track("fresh")  # already gone: nothing to do
    assert not (root / "fresh").exists()
    assert not list(root.glob(".cadenza-old-*"))
