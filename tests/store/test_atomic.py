"""The one atomic-write rule: a reader sees the old file or folder or the new one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.store.atomic import (
    TMP_PREFIX,
    TRASH_PREFIX,
    commit_folder,
    new_folder,
    remove_stale_folders,
    working_folders_of,
    write_atomic,
    write_json_atomic,
)
from cadenza.store.errors import LocalFileError


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_bytes_text_and_pieces_replace_the_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    write_atomic(target, "twø")
    assert target.read_text(encoding="utf-8") == "twø"
    write_atomic(target, (piece for piece in ["th", "ree"]))
    assert target.read_text() == "three"
    write_json_atomic(target, {"b": 1, "a": [2]})
    assert target.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_writer_that_fails_midway_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "playlist.m3u8"
    target.write_text("#EXTM3U\nold\n")

    def pieces() -> Iterator[str]:
        yield "#EXTM3U\n"
        raise ValueError("renderer failed")

    with pytest.raises(ValueError, match="renderer failed"):
        write_atomic(target, pieces())
    assert target.read_text() == "#EXTM3U\nold\n"
    assert [p.name for p in tmp_path.iterdir()] == ["playlist.m3u8"]


def test_an_unwritable_place_is_a_local_file_error(tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "a.json"
    with pytest.raises(LocalFileError) as info:
        write_atomic(target, "x")
    assert info.value.path == str(target)
    assert info.value.reason.startswith("cannot write: ")


def test_commit_folder_replaces_an_old_copy_in_one_step(tmp_path: Path) -> None:
    final = tmp_path / "song"
    final.mkdir()
    (final / "old.txt").write_text("old")
    work = new_folder(tmp_path, "song")
    assert work.name.startswith(f"{TMP_PREFIX}song-{os.getpid()}-")
    assert working_folders_of(tmp_path, "song", os.getpid()) == [work]
    (work / "new.txt").write_text("new")
    commit_folder(work, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["song"]  # no working folder, no trash


def test_commit_into_a_missing_parent_is_a_local_file_error(tmp_path: Path) -> None:
    work = new_folder(tmp_path, "song")
    with pytest.raises(LocalFileError, match="cannot move track into place"):
        commit_folder(work, tmp_path / "no" / "song")
    assert work.is_dir()  # still there for the caller to clear


def test_stale_folders_of_dead_writers_go_and_live_ones_stay(tmp_path: Path) -> None:
    dead = tmp_path / f"{TMP_PREFIX}a-{_dead_pid()}-0123abcd"
    live = tmp_path / f"{TMP_PREFIX}b-{os.getpid()}-0123abcd"
    kept_aside = tmp_path / f"{TRASH_PREFIX}c-0123abcd"  # killed mid-commit: put back
    junk_aside = tmp_path / f"{TRASH_PREFIX}d-0123abcd"  # not worth keeping: deleted
    for folder in (dead, live, kept_aside, junk_aside):
        folder.mkdir()
    (kept_aside / "keep").write_text("")
    removed = remove_stale_folders(tmp_path, keep=lambda p: (p / "keep").exists())
    assert sorted(removed) == sorted([dead, junk_aside])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c", live.name])
    assert (tmp_path / "c" / "keep").exists()
