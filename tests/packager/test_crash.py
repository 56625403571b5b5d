"""A batch killed at any moment loses nothing and never shows a half-made track.

``cadenza package`` runs as a real process group and gets SIGKILL at seeded
random moments; after every kill, every track folder that a reader could see is
checked against its own manifests, and a final rerun completes the rest while
skipping what was already finished.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PLAYLIST_NAME, PRESENTATION_NAME
from cadenza.packager.batch import run_batch
from cadenza.packager.ladder import load_ladder
from cadenza.packager.output import is_complete, remove_stale_temp_dirs
from cadenza.packager.track import PackageOptions, TrackResult, package_track
from cadenza.store.atomic import TMP_PREFIX, TRASH_PREFIX
from tests.conftest import MakeInput
from tests.packager.verify import decoded_ticks_after_edit_list

KILL_ROUNDS = 8
TRACKS = 4
LADDER = """
name = "crash"
[[rung]]
codec = "aac"
bitrate_kbps = 64
[[rung]]
codec = "opus"
bitrate_kbps = 64
[[rung]]
codec = "flac"
"""


def _cadenza(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "cadenza", *(str(a) for a in args)]


def _visible_tracks(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _assert_whole(track: Path) -> None:
    """A visible track folder is complete: its manifests exist and every file they
    name is there at its recorded size."""
    presentation = presentation_from_json((track / PRESENTATION_NAME).read_bytes())
    assert (track / MASTER_NAME).is_file() and (track / MPD_NAME).is_file()
    for rendition in presentation.renditions:
        folder = track / rendition.id
        assert (folder / PLAYLIST_NAME).is_file()
        files = sorted(p for p in folder.iterdir() if p.name != PLAYLIST_NAME)
        media = sum(p.stat().st_size for p in files)
        expected = rendition.init_size_bytes + sum(s.size_bytes for s in rendition.segments)
        assert media == expected, f"{folder}: {media} bytes on disk, manifests say {expected}"


@pytest.fixture
def batch_inputs(make_input: MakeInput, tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(TRACKS):
        source = make_input("flac", 44100, 2, 2.0 + index * 0.5, name=f"t{index}")
        (folder / source.name).write_bytes(source.read_bytes())
    ladder = tmp_path / "crash.toml"
    ladder.write_text(LADDER)
    return folder, ladder


def test_kill_9_at_random_points_then_rerun_completes_everything(
    batch_inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    inputs, ladder = batch_inputs
    out = tmp_path / "out"
    argv = _cadenza("package", inputs, "--out", out, "--ladder", ladder, "--jobs", "2")
    # How long a whole run takes here bounds the random kill moments.
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    full_run_s = time.monotonic() - started
    rng = random.Random(20261125)
    kills = 0
    for _ in range(KILL_ROUNDS):
        for track in _visible_tracks(out):
            os.rename(track, out / f".{track.name}-deleted-{rng.random()}")
        process = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0.05, full_run_s))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
        for track in _visible_tracks(out):
            _assert_whole(track)
    assert kills >= KILL_ROUNDS // 2, "the kills should mostly land mid-run"
    finished_before = {t.name: t.stat().st_ino for t in _visible_tracks(out)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "batch-report.json").read_text())
    statuses = {t["track_id"]: t["status"] for t in report["tracks"]}
    for name, inode in finished_before.items():
        assert statuses[name] == "skipped"
        assert (out / name).stat().st_ino == inode  # not redone
    assert set(statuses) == {f"t{i}" for i in range(TRACKS)}
    assert not list(out.glob(f"{TMP_PREFIX}*")), "working folders of killed runs are cleared"
    for index in range(TRACKS):
        track = out / f"t{index}"
        _assert_whole(track)
        presentation = presentation_from_json((track / PRESENTATION_NAME).read_bytes())
        for rendition in presentation.renditions:
            ticks = decoded_ticks_after_edit_list(track / rendition.id, rendition)
            assert ticks == round((2.0 + index * 0.5) * rendition.sample_rate_hz)


def _hang(source: Path, out_root: Path, options: PackageOptions) -> TrackResult:
    if source.stem == "t1":
        time.sleep(600)
    return package_track(source, out_root, options)


def _crash(source: Path, out_root: Path, options: PackageOptions) -> TrackResult:
    if source.stem == "t1":
        faulthandler.disable()  # pytest's handler would dump every thread's stack
        os.abort()
    return package_track(source, out_root, options)


def _options(ladder: Path) -> PackageOptions:
    return PackageOptions(ladder=load_ladder(str(ladder)), segment_duration=Fraction(2))


def test_a_hanging_track_is_stopped_at_its_time_limit(
    batch_inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    inputs, ladder = batch_inputs
    out = tmp_path / "out"
    out.mkdir()
    files = sorted(inputs.iterdir())
    summary = run_batch(files, out, _options(ladder), jobs=2, timeout_s=20.0, package=_hang)
    by_id = {r.track_id: r for r in summary.results}
    assert by_id["t1"].status == "failed"
    assert "gave up after 20 s" in (by_id["t1"].error or "")
    assert all(by_id[f"t{i}"].status == "packaged" for i in (0, 2, 3))
    assert not (out / "t1").exists()


def test_a_crashing_track_fails_alone(batch_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """A track that kills its process (here SIGABRT, as an FFmpeg assertion would)
    is reported failed with the signal; the batch goes on."""
    inputs, ladder = batch_inputs
    out = tmp_path / "out"
    out.mkdir()
    files = sorted(inputs.iterdir())
    summary = run_batch(files, out, _options(ladder), jobs=2, timeout_s=120.0, package=_crash)
    by_id = {r.track_id: r for r in summary.results}
    assert by_id["t1"].status == "failed"
    assert f"signal {int(signal.SIGABRT)}" in (by_id["t1"].error or "")
    assert all(is_complete(out / f"t{i}") for i in (0, 2, 3))
    assert summary.exit_status == 1


def _complete_track(make_input: MakeInput, out: Path, ladder: Path, name: str) -> Path:
    source = make_input("flac", 44100, 2, 1.0, name=name)
    result = package_track(source, out, _options(ladder))
    assert result.status == "packaged", result.error
    return out / name


def test_a_kill_between_the_commit_renames_keeps_the_old_track(
    batch_inputs: tuple[Path, Path], make_input: MakeInput, tmp_path: Path
) -> None:
    """commit_track moves the old copy aside, then the new one in: a kill between the
    two leaves only the old copy aside, and the next run puts it back."""
    _, ladder = batch_inputs
    out = tmp_path / "out"
    out.mkdir()
    track = _complete_track(make_input, out, ladder, "kept")
    os.rename(track, out / f"{TRASH_PREFIX}kept-0123abcd")
    remove_stale_temp_dirs(out)
    assert is_complete(track)
    assert not list(out.glob(f"{TRASH_PREFIX}*"))


def test_working_folders_of_dead_processes_are_removed_and_live_ones_kept(
    tmp_path: Path,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{TMP_PREFIX}t-{dead.pid}-0123abcd"
    live = tmp_path / f"{TMP_PREFIX}t-{os.getpid()}-0123abcd"
    stale.mkdir()
    live.mkdir()
    assert remove_stale_temp_dirs(tmp_path) == [stale]
    assert live.is_dir()
