"""``cadenza gc`` next to just-in-time serving: the write-back area is never swept,
whatever its age, while gc still removes a packaged track's earlier files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cadenza.packager.gc import LocalTree, sweep
from tests.origin.conftest import TRACK


def test_gc_never_touches_the_write_back_area(packaged_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(packaged_root, root)
    old = root / TRACK / "aac-128k" / "seg-00001-0badc0de.m4s"  # an earlier packaging's
    old.write_bytes(b"old")
    written_back = root / ".jit" / TRACK / "0123456789ab" / "aac-128k" / "seg-00001.m4s"
    written_back.parent.mkdir(parents=True)
    written_back.write_bytes(b"built")
    (root / ".jit" / TRACK / "lineage.json").write_text('{"format": 1, "builds": []}')
    long_ago = 1_000_000.0
    for path in [*(root / TRACK).rglob("*"), written_back]:
        os.utime(path, (long_ago, long_ago))
    plans = list(sweep(LocalTree(root), now_s=2e9, grace_s=0.0, dry_run=False))
    assert [p.track_id for p in plans] == [TRACK]
    assert plans[0].remove == ("aac-128k/seg-00001-0badc0de.m4s",)
    assert not old.exists()
    assert written_back.read_bytes() == b"built"
    assert (root / ".jit" / TRACK / "lineage.json").exists()
