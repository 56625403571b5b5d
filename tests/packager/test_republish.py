"""Re-runs that notice changes, and republishing that is safe behind immutable caching,
on a local ``--out`` folder: a fingerprint per track decides skip / repackage /
collision, a republished track's files get new names beside the old ones, and
``cadenza gc`` removes the old set only after its grace period."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import PRESENTATION_NAME, Presentation
from cadenza.packager.gc import LocalTree, plan_track, referenced_names, sweep
from tests.conftest import MakeInput

LADDER = '[[rung]]\ncodec = "aac"\nbitrate_kbps = 64\n'
OTHER_LADDER = '[[rung]]\ncodec = "aac"\nbitrate_kbps = 96\n'


@pytest.fixture
def ladder(tmp_path: Path) -> Path:
    path = tmp_path / "ladder.toml"
    path.write_text(LADDER, encoding="utf-8")
    return path


def _run(*args: str | Path) -> int:
    """One ``cadenza package`` run; the report keeps only its run (runs started within
    the same second are not told apart by order in a kept history)."""
    out = Path(str(args[list(args).index("--out") + 1]))
    (out / "batch-report.json").unlink(missing_ok=True)
    return main(["package", *(str(a) for a in args), "--jobs", "1"])


def _report(out: Path) -> dict[str, dict[str, object]]:
    """The latest run's tracks (the report's top level is the latest run)."""
    report = json.loads((out / "batch-report.json").read_text())
    return {str(t["track_id"]): t for t in report["tracks"]}


def _presentation(track: Path) -> Presentation:
    return presentation_from_json((track / PRESENTATION_NAME).read_bytes())


def _files(track: Path) -> dict[str, bytes]:
    return {
        p.relative_to(track).as_posix(): p.read_bytes() for p in track.rglob("*") if p.is_file()
    }


def _copy(make_input: MakeInput, dest: Path, duration_s: float) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(make_input("flac", 44100, 2, duration_s), dest)
    return dest


def test_presentation_records_the_fingerprint_and_a_rerun_skips(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    source = _copy(make_input, tmp_path / "in" / "song.flac", 0.5)
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", ladder, "--segment-duration", "1") == 0
    presentation = _presentation(out / "song")
    fingerprint = presentation.fingerprint
    assert fingerprint is not None
    assert fingerprint.source_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert fingerprint.source_size_bytes == source.stat().st_size
    location = str(source.absolute())
    assert fingerprint.source_name == "song.flac"
    assert fingerprint.source_location_sha256 == hashlib.sha256(location.encode()).hexdigest()
    # presentation.json is published beside the media: it must not disclose where the
    # source lives on the packaging machine.
    assert str(source.parent) not in (out / "song" / "presentation.json").read_text()
    assert json.loads(fingerprint.ladder) == [
        {
            "bitrate_bps": 64000,
            "channels": None,
            "codec": "aac",
            "profile": "lc",
            "sample_rate_hz": None,
        }
    ]
    assert (fingerprint.segment_duration_ticks, fingerprint.segment_duration_timescale) == (1, 1)
    assert dict(fingerprint.options) == {"layout": "separate"}
    assert fingerprint.cadenza_version
    # The first packaging keeps the plain names.
    assert [r.name_tag for r in presentation.renditions] == [""]
    assert (out / "song" / "aac-64k" / "init.mp4").is_file()
    before = _files(out / "song")
    assert _run(source, "--out", out, "--ladder", ladder, "--segment-duration", "1") == 0
    track = _report(out)["song"]
    assert track["status"] == "skipped"
    assert track["reason"] == "up to date: fingerprint matches"
    assert _files(out / "song") == before


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("source", "repackaged: source changed"),
        ("ladder", "repackaged: ladder changed"),
        ("segment_duration", "repackaged: segment_duration changed"),
        ("layout", "repackaged: options changed"),
    ],
)
def test_each_change_repackages_under_new_names_beside_the_old(
    make_input: MakeInput, tmp_path: Path, ladder: Path, change: str, reason: str
) -> None:
    source = _copy(make_input, tmp_path / "in" / "song.flac", 0.5)
    out = tmp_path / "out"
    args: list[str | Path] = [source, "--out", out, "--ladder", ladder, "--segment-duration", "1"]
    assert _run(*args) == 0
    old = _presentation(out / "song")
    old_files = _files(out / "song")
    if change == "source":
        _copy(make_input, source, 0.75)
    elif change == "ladder":
        other = tmp_path / "other.toml"
        other.write_text(OTHER_LADDER, encoding="utf-8")
        args[4] = other
    elif change == "segment_duration":
        args[6] = "0.5"
    else:
        args.append("--single-file")
    assert _run(*args) == 0
    track = _report(out)["song"]
    assert (track["status"], track["reason"]) == ("packaged", reason)
    new = _presentation(out / "song")
    assert new.fingerprint != old.fingerprint
    tags = {r.name_tag for r in new.renditions}
    assert len(tags) == 1 and tags != {""}
    tag = tags.pop()
    new_names = referenced_names(new)
    assert new_names.isdisjoint(referenced_names(old))  # every URL is new
    files = _files(out / "song")
    assert new_names <= files.keys()
    # Every file of the old set is still there, byte for byte, for old playlists.
    for name in referenced_names(old):
        assert files[name] == old_files[name], name
    playlist = (out / "song" / new.renditions[0].playlist_uri).read_text()
    assert all(tag in line for line in playlist.splitlines() if not line.startswith("#"))


def test_a_track_id_reused_by_another_file_fails_naming_both_unless_forced(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    first = _copy(make_input, tmp_path / "a" / "tone.flac", 0.5)
    second = tmp_path / "b" / "tone.mp3"
    second.parent.mkdir()
    shutil.copyfile(make_input("mp3", 44100, 2, 0.5), second)
    out = tmp_path / "out"
    assert _run(first, "--out", out, "--ladder", ladder) == 0
    before = _files(out / "tone")
    assert _run(second, "--out", out, "--ladder", ladder) == 1
    track = _report(out)["tone"]
    assert track["status"] == "failed", track
    assert f"{first.name} (sha256 " in str(track["error"])
    assert str(second) in str(track["error"])
    assert _files(out / "tone") == before
    assert _run(second, "--out", out, "--ladder", ladder, "--force") == 0
    fingerprint = _presentation(out / "tone").fingerprint
    assert fingerprint is not None
    assert fingerprint.source_location_sha256 == (
        hashlib.sha256(str(second.absolute()).encode()).hexdigest()
    )


def test_the_same_file_moved_is_not_a_collision(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    first = _copy(make_input, tmp_path / "a" / "tone.flac", 0.5)
    out = tmp_path / "out"
    assert _run(first, "--out", out, "--ladder", ladder) == 0
    moved = tmp_path / "b" / "tone.flac"
    moved.parent.mkdir()
    first.rename(moved)
    assert _run(moved, "--out", out, "--ladder", ladder) == 0
    assert _report(out)["tone"]["status"] == "skipped"


def test_force_republishes_under_names_never_used_before(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    source = _copy(make_input, tmp_path / "song.flac", 0.5)
    out = tmp_path / "out"
    seen: set[str] = set()
    for _ in range(3):
        assert _run(source, "--out", out, "--ladder", ladder, "--force") == 0
        names = referenced_names(_presentation(out / "song"))
        assert names.isdisjoint(seen)
        seen |= names
    assert _report(out)["song"]["reason"] == "repackaged: --force"
    assert seen <= _files(out / "song").keys()


def test_a_failed_republish_changes_nothing(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    source = _copy(make_input, tmp_path / "song.flac", 0.5)
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", ladder) == 0
    files = [p for p in (out / "song").rglob("*") if p.is_file()]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    source.write_bytes(b"fLaC" + bytes(4000))  # changed, and damaged
    assert _run(source, "--out", out, "--ladder", ladder) == 1
    assert _report(out)["song"]["status"] == "failed"
    files = [p for p in (out / "song").rglob("*") if p.is_file()]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    assert after == before


def test_a_catalogue_with_changed_sources_and_an_id_collision(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    """Issue 16's catalogue, scaled down: 20 tracks of 0.5 s, 3 sources changed, 1
    track id given to another file: 3 repackaged, 1 failed naming both, 16 skipped."""
    sources = [_copy(make_input, tmp_path / "in" / f"t{i:02d}.flac", 0.5) for i in range(20)]
    catalogue = tmp_path / "catalogue.csv"
    rows = [f"t{i:02d},{s}" for i, s in enumerate(sources)]
    catalogue.write_text("track_id,source\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _run("--catalogue", catalogue, "--out", out, "--ladder", ladder) == 0
    for index in (3, 8, 15):
        _copy(make_input, sources[index], 0.6)
    intruder = _copy(make_input, tmp_path / "elsewhere" / "t11.flac", 0.7)
    rows[11] = f"t11,{intruder}"
    catalogue.write_text("track_id,source\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert _run("--catalogue", catalogue, "--out", out, "--ladder", ladder) == 1
    tracks = _report(out)
    by_status: dict[str, list[str]] = {}
    for track_id, track in sorted(tracks.items()):
        by_status.setdefault(str(track["status"]), []).append(track_id)
    assert by_status == {
        "packaged": ["t03", "t08", "t15"],
        "failed": ["t11"],
        "skipped": [f"t{i:02d}" for i in range(20) if i not in (3, 8, 11, 15)],
    }
    assert all(tracks[t]["reason"] == "repackaged: source changed" for t in by_status["packaged"])
    error = str(tracks["t11"]["error"])
    assert f"t11.flac (sha256 {hashlib.sha256(sources[11].read_bytes()).hexdigest()[:12]}" in error
    assert str(intruder) in error


def test_gc_removes_the_old_set_only_after_the_grace_period(
    make_input: MakeInput, tmp_path: Path, ladder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _copy(make_input, tmp_path / "song.flac", 0.5)
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", ladder) == 0
    old = referenced_names(_presentation(out / "song"))
    other = tmp_path / "other.toml"
    other.write_text(OTHER_LADDER, encoding="utf-8")  # aac-64k goes, aac-96k comes
    assert _run(source, "--out", out, "--ladder", other) == 0
    (out / "song" / "cover.jpg").write_bytes(b"not the packager's")
    new = referenced_names(_presentation(out / "song"))
    assert old <= _files(out / "song").keys()
    # Within the grace period: nothing goes, the old set is counted as waiting.
    plans = list(sweep(LocalTree(out), now_s=time.time(), grace_s=3600, dry_run=False))
    assert [(p.track_id, p.remove, p.waiting) for p in plans] == [("song", (), len(old))]
    assert old <= _files(out / "song").keys()
    # A dry run names the old set and removes nothing.
    capsys.readouterr()
    assert main(["gc", str(out), "--grace", "0", "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == sorted(f"would remove song/{n}" for n in old)
    assert old <= _files(out / "song").keys()
    assert main(["gc", str(out), "--grace", "0"]) == 0
    left = _files(out / "song").keys()
    assert left.isdisjoint(old)
    assert new <= left and "cover.jpg" in left and PRESENTATION_NAME in left
    assert not (out / "song" / "aac-64k").exists()  # the rung the ladder dropped
    assert main(["gc", str(out), "--grace", "0"]) == 0  # nothing more to do
    assert _files(out / "song").keys() == left


def test_gc_never_removes_what_the_presentation_names_nor_touches_incomplete_tracks(
    make_input: MakeInput, tmp_path: Path, ladder: Path
) -> None:
    source = _copy(make_input, tmp_path / "song.flac", 0.5)
    out = tmp_path / "out"
    assert _run(source, "--out", out, "--ladder", ladder) == 0
    presentation = _presentation(out / "song")
    files = {n: 0.0 for n in _files(out / "song")}
    files["aac-64k/seg-00009-deadbeef.m4s"] = 0.0
    plan = plan_track("song", presentation, files, now_s=1e9, grace_s=0)
    assert plan.remove == ("aac-64k/seg-00009-deadbeef.m4s",)
    # An old file but a presentation published within the grace period: kept.
    files[PRESENTATION_NAME] = 1e9 - 10
    assert plan_track("song", presentation, files, now_s=1e9, grace_s=60).remove == ()
    # A file younger than the grace period (an upload in progress): kept.
    files[PRESENTATION_NAME] = 0.0
    files["aac-64k/seg-00009-deadbeef.m4s"] = 1e9 - 10
    assert plan_track("song", presentation, files, now_s=1e9, grace_s=60).remove == ()
    # A master playlist newer than presentation.json: a switch half done, hands off.
    files["master.m3u8"] = 5.0
    assert plan_track("song", presentation, files, now_s=1e9, grace_s=0).skipped
    assert plan_track("song", None, files, now_s=1e9, grace_s=0).skipped
    (out / "half" / "aac-64k").mkdir(parents=True)
    (out / "half" / "aac-64k" / "seg-00001.m4s").write_bytes(b"x")
    assert main(["gc", str(out), "--grace", "0"]) == 0
    assert (out / "half" / "aac-64k" / "seg-00001.m4s").is_file()
