"""A full disk fails the track that hit it, clearly, and harms nothing else.

A real small file system: a 3 MiB tmpfs mounted for the test (root is needed
to mount; ``make test`` runs as root in CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.packager.output import is_complete
from cadenza.store.atomic import TMP_PREFIX
from tests.conftest import MakeInput
from tests.packager.test_crash import _assert_whole

SIZE = "3m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _package(*args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cadenza", "package", *(str(a) for a in args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_disk_full_fails_that_track_only_and_leaves_no_partial_folder(
    small_disk: Path, make_input: MakeInput
) -> None:
    small = make_input("flac", 44100, 2, 1.0, name="small")
    assert _package(small, "--out", small_disk, "--ladder", "lossy").returncode == 0
    assert is_complete(small_disk / "small")
    before = sorted(p.relative_to(small_disk) for p in (small_disk / "small").rglob("*"))
    big = make_input("flac", 44100, 2, 30.0, name="big")  # the full ladder: ~7 MB of output
    done = _package(big, "--out", small_disk)
    assert done.returncode == 1
    report = json.loads((small_disk / "batch-report.json").read_text())
    (track,) = report["tracks"]
    assert track["status"] == "failed"
    assert "no space left on device" in track["error"]
    assert "no space left on device" in done.stderr
    assert not (small_disk / "big").exists()
    assert not list(small_disk.glob(f"{TMP_PREFIX}*")), "the partial work is removed"
    _assert_whole(small_disk / "small")
    assert sorted(p.relative_to(small_disk) for p in (small_disk / "small").rglob("*")) == before
