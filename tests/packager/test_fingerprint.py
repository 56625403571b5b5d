"""The fingerprint model, its place in ``presentation.json``, and the skip / repackage /
collision decision, as pure functions of their inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from cadenza.manifests.errors import InvalidPresentationError
from cadenza.manifests.fingerprint import Fingerprint, FingerprintField
from cadenza.manifests.jsonio import presentation_from_json, presentation_to_json
from cadenza.manifests.model import tagged_name
from cadenza.packager.fingerprint import (
    HASH_CHUNK_BYTES,
    Previous,
    Verdict,
    decide,
    hash_file,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "presentation.json"
PRINT = Fingerprint(
    source_sha256="ab" * 32,
    source_size_bytes=1234,
    source_name="song.flac",
    source_location_sha256=hashlib.sha256(b"/masters/song.flac").hexdigest(),
    source_location="/masters/song.flac",
    ladder='[{"codec":"aac"}]',
    segment_duration_ticks=4,
    segment_duration_timescale=1,
    options=(("layout", "separate"),),
    cadenza_version="0.1.0",
)


def _done(fingerprint: Fingerprint | None) -> Previous:
    presentation = presentation_from_json(GOLDEN.read_bytes())
    done = dataclasses.replace(presentation, fingerprint=fingerprint)
    return Previous(done, frozenset({"presentation.json", "aac-64k/init.mp4"}))


def test_the_fingerprint_and_name_tag_round_trip_and_old_documents_still_load() -> None:
    old = presentation_from_json(GOLDEN.read_bytes())
    assert old.fingerprint is None and all(r.name_tag == "" for r in old.renditions)
    assert "fingerprint" not in json.loads(presentation_to_json(old))  # unchanged layout
    renditions = tuple(dataclasses.replace(r, name_tag="3f9a0c1d") for r in old.renditions)
    new = dataclasses.replace(old, renditions=renditions, fingerprint=PRINT)
    again = presentation_from_json(presentation_to_json(new))
    assert again == new
    assert again.renditions[0].init_name == "init-3f9a0c1d.mp4"
    assert again.renditions[0].segment_name(again.renditions[0].segments[0]) == (
        "seg-00001-3f9a0c1d.m4s"
    )
    assert again.renditions[0].playlist_uri.endswith("/playlist-3f9a0c1d.m3u8")


@pytest.mark.parametrize("tag", ["../x", "a/b", "a" * 33, "tag.m4s"])
def test_a_name_tag_that_is_not_plain_letters_and_digits_is_refused(tag: str) -> None:
    document = json.loads(GOLDEN.read_text())
    document["renditions"][0]["name_tag"] = tag
    with pytest.raises(InvalidPresentationError, match="name_tag"):
        presentation_from_json(json.dumps(document))


def test_tagged_names() -> None:
    assert tagged_name("init.mp4", "") == "init.mp4"
    assert tagged_name("seg-$Number%05d$.m4s", "ab12") == "seg-$Number%05d$-ab12.m4s"


def test_what_counts_as_a_change() -> None:
    assert PRINT.changes(dataclasses.replace(PRINT, cadenza_version="9.9.9")) == ()
    assert PRINT.changes(dataclasses.replace(PRINT, source_location_sha256="ef" * 32)) == ()
    same_duration = dataclasses.replace(
        PRINT, segment_duration_ticks=8, segment_duration_timescale=2
    )
    assert PRINT.changes(same_duration) == ()
    changed = dataclasses.replace(
        PRINT, source_sha256="cd" * 32, ladder="[]", segment_duration_ticks=2, format_version=0
    )
    assert PRINT.changes(changed) == (
        FingerprintField.SOURCE,
        FingerprintField.LADDER,
        FingerprintField.SEGMENT_DURATION,
        FingerprintField.FORMAT,
    )


def test_decisions() -> None:
    nothing = decide(PRINT, Previous(), force=False)
    assert (nothing.verdict, nothing.name_tag, nothing.reason) == (Verdict.NEW, "", None)
    leftovers = decide(PRINT, Previous(None, frozenset({"aac-64k/seg-00001.m4s"})), force=False)
    assert leftovers.verdict is Verdict.NEW and len(leftovers.name_tag) == 8
    assert decide(PRINT, _done(PRINT), force=False).verdict is Verdict.SKIP
    legacy = decide(PRINT, _done(None), force=False)
    assert (legacy.verdict, legacy.reason) == (
        Verdict.REPACKAGE,
        "repackaged: no fingerprint recorded",
    )
    moved = dataclasses.replace(PRINT, source_location_sha256="01" * 32)
    assert decide(moved, _done(PRINT), force=False).verdict is Verdict.SKIP
    other = dataclasses.replace(
        PRINT,
        source_name="song.mp3",
        source_location_sha256="02" * 32,
        source_location="/other/song.mp3",
        source_sha256="cd" * 32,
    )
    collision = decide(other, _done(PRINT), force=False)
    assert collision.verdict is Verdict.COLLISION
    error = collision.collision_error("song")
    # The recorded source is named by file name and content hash (its location is not
    # published); this run's source by its full location.
    assert "song.flac (sha256 abababababab" in error and "/other/song.mp3" in error
    forced = decide(other, _done(PRINT), force=True)
    assert (forced.verdict, forced.reason) == (Verdict.REPACKAGE, "repackaged: --force")
    assert forced.name_tag and forced.name_tag not in "aac-64k/init.mp4"
    edited = dataclasses.replace(PRINT, source_sha256="cd" * 32)
    assert decide(edited, _done(PRINT), force=False).reason == "repackaged: source changed"


def test_the_source_is_hashed_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * (3 * HASH_CHUNK_BYTES // 256 + 7)
    path.write_bytes(data)
    assert hash_file(path) == (hashlib.sha256(data).hexdigest(), len(data))
