"""One definition of a complete track: its presentation.json exists and parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.store.complete import is_complete, is_track_name, presentation_key

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "presentation.json"


def test_a_presentation_that_parses_is_complete() -> None:
    assert is_complete(GOLDEN.read_bytes())


@pytest.mark.parametrize(
    "data",
    [
        None,  # no presentation.json at all: an upload that has not reached it
        b"",  # created, nothing written yet
        b'{"track_id": "t", "timescale"',  # cut off mid-write
        b"\xff\xfe not utf-8",
        b'{"track_id": "t"}',  # JSON, but not a presentation
    ],
    ids=["missing", "empty", "truncated", "not-utf8", "not-a-presentation"],
)
def test_anything_else_is_not(data: bytes | None) -> None:
    assert not is_complete(data)


def test_a_truncated_copy_of_a_real_presentation_is_not_complete() -> None:
    data = GOLDEN.read_bytes()
    assert not is_complete(data[: len(data) // 2])


def test_track_names_and_keys() -> None:
    assert presentation_key("song-1") == "song-1/presentation.json"
    assert is_track_name("song-1")
    assert not is_track_name(".cadenza")  # the batch report's folder
    assert not is_track_name(".cadenza-tmp-song-1-123-abcdef01")
    assert not is_track_name("")
