"""``cadenza package --config FILE.toml``: the file describes the job, flags override it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cadenza.cli import main
from tests.conftest import MakeInput

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "package.toml"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _target_duration(track: Path, rendition: str) -> str:
    playlist = (track / rendition / "playlist.m3u8").read_text(encoding="utf-8")
    return next(line for line in playlist.splitlines() if "TARGETDURATION" in line)


def test_the_shipped_example_packages_end_to_end(make_input: MakeInput, tmp_path: Path) -> None:
    """examples/package.toml as shipped, beside a generated input where it expects the
    bundled sample (its paths are relative to its own folder)."""
    config = tmp_path / "examples" / "package.toml"
    config.parent.mkdir()
    shutil.copy(EXAMPLE, config)
    (tmp_path / "samples").mkdir()
    shutil.copy(make_input("flac", 44100, 2, 9.0, name="gen"), tmp_path / "samples" / "sample.flac")
    assert main(["package", "--config", str(config), "-q"]) == 0
    track = tmp_path / "examples" / "out" / "sample"
    presentation = json.loads((track / "presentation.json").read_text())
    assert [r["id"] for r in presentation["renditions"]] == [
        "aac-96k",
        "aac-192k",
        "opus-96k",
        "flac",
    ]
    assert presentation["target_segment_duration_ticks"] == 4 * 44100
    assert all(r["layout"] == "separate" for r in presentation["renditions"])
    assert (tmp_path / "examples" / "out" / "batch-report.json").is_file()


def test_flags_override_the_file(make_input: MakeInput, tmp_path: Path) -> None:
    source = make_input("flac", 44100, 2, 9.0, name="over")
    config = _write(
        tmp_path / "job.toml",
        f'[inputs]\npaths = ["{source}"]\n[output]\nout = "from-file"\n'
        '[ladder]\npreset = "lossless"\n[options]\nsegment_duration = 2\n',
    )
    assert main(["package", "--config", str(config), "-q"]) == 0
    assert _target_duration(tmp_path / "from-file" / "over", "flac") == "#EXT-X-TARGETDURATION:2"
    out = tmp_path / "from-flags"
    assert (
        main(
            ["package", "--config", str(config), "--out", str(out), "--segment-duration", "3", "-q"]
        )
        == 0
    )
    assert _target_duration(out / "over", "flac") == "#EXT-X-TARGETDURATION:3"


def test_inputs_on_the_command_line_replace_the_files(
    make_input: MakeInput, tmp_path: Path
) -> None:
    in_file = make_input("flac", 44100, 2, 1.0, name="in-file")
    on_line = make_input("wav", 44100, 2, 1.0, name="on-line")
    config = _write(
        tmp_path / "job.toml",
        f'[inputs]\npaths = ["{in_file}"]\n[output]\nout = "out"\n[ladder]\npreset = "lossless"\n',
    )
    assert main(["package", str(on_line), "--config", str(config), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["on-line"]


def test_relative_paths_are_the_config_folders(make_input: MakeInput, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    (folder / "music").mkdir(parents=True)
    shutil.copy(make_input("flac", 44100, 2, 1.0, name="rel"), folder / "music" / "rel.flac")
    _write(folder / "tiny.toml", '[[rung]]\ncodec = "flac"\n')
    config = _write(
        folder / "job.toml",
        '[inputs]\npaths = ["music"]\n[output]\nout = "out"\n[ladder]\nfile = "tiny.toml"\n',
    )
    assert main(["package", "--config", str(config), "-q"]) == 0
    assert (folder / "out" / "rel" / "flac" / "init.mp4").is_file()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[options]\njbos = 2\n", "'options.jbos': unknown option"),
        ('[output]\nout = "x"\ndir = "y"\n', "'output.dir': unknown key"),
        ('[inputs]\nfiles = ["a.flac"]\n', "'inputs.files': unknown key"),
        ("[pipeline]\nx = 1\n", "'pipeline': unknown section"),
        ('[ladder]\npreset = "music"\nrungs = []\n', "'ladder.rungs': unknown key"),
        ("[options]\njobs = 0\n", "'options.jobs': must be at least 1"),
        ('[options]\nforce = "yes"\n', "'options.force': must be true or false"),
        ("[options]\nsegment_duration = 90\n", "'options.segment_duration': must be between"),
        ('[[ladder.rung]]\ncodec = "vorbis"\n', "unknown codec 'vorbis'"),
        ('[inputs]\npaths = "a.flac"\n', "'inputs.paths': must be a list"),
        ("[options\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_a_usage_error_naming_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    config = _write(tmp_path / "bad.toml", text)
    with pytest.raises(SystemExit) as exit_info:
        main(["package", "--config", str(config), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{config}: " in err and key in err


def test_out_is_required_somewhere(
    make_input: MakeInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "job.toml", '[ladder]\npreset = "lossless"\n')
    assert main(["package", str(make_input()), "--config", str(config)]) == 2
    assert "give --out" in capsys.readouterr().err


def test_quiet_on_the_line_and_verbose_in_the_file_clash(
    make_input: MakeInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "job.toml", "[options]\nverbose = true\n")
    argv = ["package", str(make_input()), "--out", str(tmp_path / "out"), "--config", str(config)]
    assert main([*argv, "-q"]) == 2
    assert "together" in capsys.readouterr().err
