"""Replacing a local track keeps the files of its earlier packagings
(:func:`cadenza.store.atomic.carry_over`): linked into the new folder before it is
renamed into place, never overwriting the new packaging's own files."""

from __future__ import annotations

from pathlib import Path

from cadenza.store.atomic import carry_over
from cadenza.store.local import LocalStore


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_old_files_are_linked_in_and_new_ones_win(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "aac-64k").mkdir(parents=True)
    (old / "aac-64k" / "init.mp4").write_bytes(b"old init")
    (old / "aac-64k" / "playlist.m3u8").write_bytes(b"old playlist")
    (old / "gone-rung").mkdir()
    (old / "gone-rung" / "seg-00001.m4s").write_bytes(b"old segment")
    (old / "presentation.json").write_bytes(b"old presentation")
    (old / ".hidden").write_bytes(b"never carried")
    new = tmp_path / "new"
    (new / "aac-64k").mkdir(parents=True)
    (new / "aac-64k" / "init-abc.mp4").write_bytes(b"new init")
    (new / "presentation.json").write_bytes(b"new presentation")

    assert carry_over(old, new) == 3
    assert _tree(new) == {
        "aac-64k/init.mp4": b"old init",
        "aac-64k/init-abc.mp4": b"new init",
        "aac-64k/playlist.m3u8": b"old playlist",
        "gone-rung/seg-00001.m4s": b"old segment",
        "presentation.json": b"new presentation",
    }
    # A hard link on one file system: no bytes copied, the old file untouched.
    assert (new / "aac-64k" / "init.mp4").stat().st_ino == (
        old / "aac-64k" / "init.mp4"
    ).stat().st_ino
    assert (old / ".hidden").is_file()
    assert carry_over(tmp_path / "missing", new) == 0


def test_local_store_put_track_keeps_the_earlier_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = store.new_working_folder("song")
    (first / "seg-00001.m4s").write_bytes(b"first")
    store.put_track(first, "song")
    second = store.new_working_folder("song")
    (second / "seg-00001-abc.m4s").write_bytes(b"second")
    store.put_track(second, "song")
    assert _tree(tmp_path / "song") == {"seg-00001.m4s": b"first", "seg-00001-abc.m4s": b"second"}
