"""Catalogue files (``--catalogue``), ``s3://`` sources on the command line, and
``--shard I/N``: what is read, what is refused and how the refusal reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.packager.catalogue import (
    TRACK_ID_MAX,
    TrackInput,
    parse_shard,
    read_catalogue,
    select_shard,
    shard_of,
    source_input,
)
from cadenza.packager.errors import CatalogueError
from tests.conftest import MakeInput

BASE = Path("/cat")


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -- text catalogues -------------------------------------------------------------------

GOOD_TEXT = [
    ("a.flac", TrackInput("/cat/a.flac", "a")),
    ("  sub/b.wav  ", TrackInput("/cat/sub/b.wav", "b")),
    ("/abs/My Song (live)! #2.mp3", TrackInput("/abs/My Song (live)! #2.mp3", "MySonglive2")),
    ("s3://masters-1/2024/x y.flac", TrackInput("s3://masters-1/2024/x y.flac", "xy")),
    ("S3://masters/deep/a/b/c.m4a", TrackInput("s3://masters/deep/a/b/c.m4a", "c")),
    ("dir/with,comma.flac", TrackInput("/cat/dir/with,comma.flac", "withcomma")),
]


@pytest.mark.parametrize(("line", "expected"), GOOD_TEXT, ids=[g[0] for g in GOOD_TEXT])
def test_a_text_line_names_one_source(tmp_path: Path, line: str, expected: TrackInput) -> None:
    catalogue = _write(tmp_path, "list.txt", f"# masters\n\n{line}\n")
    (found,) = read_catalogue(catalogue)
    if expected.source.startswith("/cat/"):
        expected = TrackInput(str(tmp_path / expected.source[5:]), expected.track_id)
    assert found == expected


def test_text_comments_blank_lines_and_a_missing_final_newline(tmp_path: Path) -> None:
    text = "\ufeff# a catalogue\n\none.flac\n   \n  # indented comment\r\ntwo.flac"
    found = read_catalogue(_write(tmp_path, "list.txt", text))
    assert [t.track_id for t in found] == ["one", "two"]


BAD_TEXT = [
    ("s3://masters", "names a folder, not an object"),
    ("s3://masters/2024/", "names a folder, not an object"),
    ("s3://Bad_Bucket/a.flac", "'Bad_Bucket' is not a bucket name"),
    ("s3:///a.flac", "'' is not a bucket name"),
    ("https://example.com/a.flac", "https:// sources are not supported"),
    ("gs://bucket/a.flac", "gs:// sources are not supported"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_TEXT, ids=[b[0] for b in BAD_TEXT])
def test_a_bad_text_line_is_refused_with_its_number(tmp_path: Path, line: str, reason: str) -> None:
    catalogue = _write(tmp_path, "list.txt", f"good.flac\n# c\n{line}\n")
    with pytest.raises(CatalogueError) as info:
        read_catalogue(catalogue)
    ((number, problem),) = info.value.problems
    assert number == 3
    assert reason in problem
    assert str(info.value).startswith(f"{catalogue}: line 3: ")


def test_every_bad_line_is_reported_at_once(tmp_path: Path) -> None:
    lines = "\n".join(["s3://b", "ok.flac", "ftp://x/y.flac", *["s3://b"] * 12])
    with pytest.raises(CatalogueError) as info:
        read_catalogue(_write(tmp_path, "list.txt", lines))
    assert [line for line, _ in info.value.problems] == [1, 3, *range(4, 16)]
    assert str(info.value).endswith("; and 4 more")


# -- CSV catalogues --------------------------------------------------------------------

GOOD_CSV = [
    ("track_id,source\nsong-1,a.flac\n", [TrackInput("/cat/a.flac", "song-1")]),
    ("source,track_id,title\na.flac,,A title\n", [TrackInput("/cat/a.flac", "a")]),
    (" Track_ID , Source \nx.y_z,s3://mus/k.flac\n", [TrackInput("s3://mus/k.flac", "x.y_z")]),
    (
        'track_id,source\n"t1","dir/a, b.flac"\n',
        [TrackInput("/cat/dir/a, b.flac", "t1")],
    ),
    (
        "# exported 2026-11-26\ntrack_id,source\n\n# a note\n1,a.flac\n2,b.flac\n",
        [TrackInput("/cat/a.flac", "1"), TrackInput("/cat/b.flac", "2")],
    ),
    ("\ufefftrack_id,source\r\nt,a.flac\r\n", [TrackInput("/cat/a.flac", "t")]),
]


@pytest.mark.parametrize(("text", "expected"), GOOD_CSV)
def test_csv_rows_name_a_track_id_and_a_source(
    tmp_path: Path, text: str, expected: list[TrackInput]
) -> None:
    found = read_catalogue(_write(tmp_path, "list.CSV", text))
    base = str(tmp_path) + "/"
    assert found == [TrackInput(t.source.replace("/cat/", base, 1), t.track_id) for t in expected]


BAD_CSV = [
    ("id,path\n1,a.flac\n", 1, "the header row must name the columns track_id and source"),
    ("track_id\nx\n", 1, "(missing: source; found: track_id)"),
    ("track_id,source\n../x,a.flac\n", 2, "may hold only A-Z a-z 0-9 . _ -"),
    ("track_id,source\n.hidden,a.flac\n", 2, "must not start with '.'"),
    ("track_id,source\na b,a.flac\n", 2, "track id 'a b'"),
    (f"track_id,source\n{'x' * (TRACK_ID_MAX + 1)},a\n", 2, "longer than 200 characters"),
    ("track_id,source\nx,\n", 2, "no source"),
    ("track_id,source\nx\n", 2, "1 cells; the header has 2"),
    ("track_id,source\nx,s3://bucket/\n", 2, "names a folder"),
    ("", 0, "no header row (track_id,source)"),
    ("# only a comment\n", 0, "no header row"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD_CSV)
def test_a_bad_csv_row_is_refused_with_its_number(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    catalogue = _write(tmp_path, "list.csv", text)
    with pytest.raises(CatalogueError) as info:
        read_catalogue(catalogue)
    ((number, problem),) = info.value.problems
    assert number == line
    assert reason in problem


def test_an_unreadable_catalogue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="no such file"):
        read_catalogue(tmp_path / "missing.txt")
    with pytest.raises(CatalogueError, match="not UTF-8 text"):
        read_catalogue(_write(tmp_path, "latin1.txt", "caf\xe9.flac\n".encode("latin-1")))


def test_a_command_line_source_may_be_an_s3_object() -> None:
    assert source_input("s3://mus/a/b.flac") == TrackInput("s3://mus/a/b.flac", "b")
    assert source_input("rel.flac", BASE) == TrackInput("/cat/rel.flac", "rel")
    assert source_input("s3://mus/x.flac", track_id="chosen").track_id == "chosen"


# -- shards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", (0, 1)), ("0/4", (0, 4)), ("3/4", (3, 4)), ("12/100", (12, 100))]
)
def test_shard_flags_that_parse(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "0/-2", "a/b", "1", "/4", "1/", "1/2/3"])
def test_shard_flags_that_do_not(text: str) -> None:
    with pytest.raises(ValueError, match=r"I/N|0 <= I < N"):
        parse_shard(text)


def test_shards_split_the_tracks_exactly_and_stably() -> None:
    inputs = [TrackInput(f"/m/{n}.flac", f"track-{n:04d}") for n in range(1000)]
    shards = [select_shard(inputs, index, 4) for index in range(4)]
    ids = [t.track_id for shard in shards for t in shard]
    assert sorted(ids) == sorted(t.track_id for t in inputs)  # each in exactly one
    assert all(200 <= len(shard) <= 300 for shard in shards)  # and about evenly
    # By the id alone: not the order, nor the other tracks, nor the source.
    backwards = select_shard(reversed(inputs[:10]), 1, 4)
    assert backwards == list(reversed(select_shard(inputs[:10], 1, 4)))
    moved = [TrackInput(f"s3://other/{t.track_id}.wav", t.track_id) for t in inputs]
    assert [t.track_id for t in select_shard(moved, 2, 4)] == [t.track_id for t in shards[2]]
    # Pinned: a change of hash would reshuffle every running deployment's shards.
    assert [shard_of(t, 4) for t in ("sample", "track-0001", "a", "b")] == [1, 3, 3, 1]
    assert all(shard_of(f"x{n}", 1) == 0 for n in range(50))


# -- the command line ------------------------------------------------------------------


def _run(*args: str | Path) -> int:
    return main(["package", *(str(a) for a in args)])


def test_a_bad_catalogue_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = _write(tmp_path, "list.txt", "a.flac\nhttp://x/b.flac\n")
    assert _run("--catalogue", catalogue, "--out", tmp_path / "out") == 2
    assert f"{catalogue}: line 2: http:// sources are not supported" in capsys.readouterr().err


def test_no_inputs_at_all_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("--out", tmp_path / "out") == 2
    assert "--catalogue FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _run("x.flac", "--out", tmp_path / "out", "--shard", "2/2")
    assert info.value.code == 2


def test_catalogue_track_ids_and_shards_on_the_command_line(
    make_input: MakeInput, tmp_path: Path
) -> None:
    """Two shards of one CSV catalogue into one folder: every track once, under the
    id the catalogue gives it, each shard with its own report."""
    masters = tmp_path / "masters"
    masters.mkdir()
    rows = ["track_id,source"]
    for n in range(4):
        source = make_input("flac", 44100, 1, 0.5, name=f"m{n}")
        (masters / source.name).write_bytes(source.read_bytes())
        rows.append(f"album-{n},masters/{source.name}")  # relative to the catalogue
    catalogue = _write(tmp_path, "catalogue.csv", "\n".join(rows) + "\n")
    out = tmp_path / "out"
    reports = []
    for index in range(2):
        common = ("--out", out, "--ladder", "lossless", "--jobs", "1")
        assert _run("--catalogue", catalogue, "--shard", f"{index}/2", *common) == 0
        report = json.loads((out / f"batch-report-shard-{index}-of-2.json").read_text())
        reports.append({t["track_id"] for t in report["tracks"]})
        assert all(shard_of(t, 2) == index for t in reports[-1])
    assert reports[0] | reports[1] == {f"album-{n}" for n in range(4)}
    assert not reports[0] & reports[1]
    assert all((out / f"album-{n}" / "presentation.json").is_file() for n in range(4))
    assert not (out / "batch-report.json").exists()
